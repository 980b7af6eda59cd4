//! What cluster credentials cost per call, against one HMAC-SHA256 of the same input (the floor
//! any MAC-based scheme pays) in the same run.
//!
//! ```text
//! cargo run --release -p switchboard-net --example auth_bench
//! ```
//! Per call the caller mints (cached for a minute: amortised to a clone) and the callee verifies
//! the token (one HMAC per configured key until one matches), then the callee makes a reply proof
//! and the caller verifies it: four MACs on the first key in the common case.

use std::hint::black_box;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchboard_net::{ClusterIdentity, ClusterKeys};

fn main() {
    let rounds = 200_000u32;
    let now = 1_800_000_000_000u64;
    let caller = ClusterIdentity {
        node: 7,
        incarnation: now,
    };
    let callee = ClusterIdentity {
        node: 2,
        incarnation: now,
    };
    for (label, caller_keys, callee_keys) in [
        ("one key", vec!["old-key"], vec!["old-key"]),
        (
            "mid-rotation (each side matches on its second key)",
            vec!["old-key", "new-key"],
            vec!["new-key", "old-key"],
        ),
    ] {
        let signer = ClusterKeys::new(&caller_keys).expect("keys");
        let verifier = ClusterKeys::new(&callee_keys).expect("keys");
        let token = signer.mint(caller, now);
        let started = Instant::now();
        for _ in 0..rounds {
            let id = verifier.verify(black_box(&token), now).expect("valid");
            let proof = verifier.reply_proof(callee, &token);
            let back = signer
                .verify_reply(black_box(&proof), &token)
                .expect("proof");
            black_box((id, back));
        }
        let per_call = started.elapsed().as_nanos() as f64 / f64::from(rounds);

        let started = Instant::now();
        for _ in 0..rounds {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"old-key").expect("key");
            mac.update(black_box(token.as_bytes()));
            black_box(mac.finalize().into_bytes());
        }
        let one_mac = started.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!(
            "{label}: {per_call:.0} ns per call (verify + proof + check), one HMAC-SHA256 {one_mac:.0} ns: {:.1}x",
            per_call / one_mac
        );
    }
}
