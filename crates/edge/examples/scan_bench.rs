//! What the strict head scanner costs, against hyper's own parser (httparse) in the same run.
//!
//! ```text
//! cargo run --release -p switchboard-edge --example scan_bench
//! ```
//! For three request shapes (a REST send with a bearer token, a WebSocket upgrade, a bare health
//! check) it times N rounds of `Scanner::feed` (validation included: request line, every field
//! name and value, framing) and of `httparse::Request::parse` over the same bytes, and prints
//! ns per request and the ratio. Both run in this process, one after the other, alternating
//! rounds so machine noise hits both alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use switchboard_edge::head::{Limits, Scanner};

fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.".to_owned() + &"a".repeat(300);
    vec![
        (
            "REST send (bearer, JSON body)",
            format!(
                "POST /api/hubs/chat/users/alice/:send?api-version=2022-06-01 HTTP/1.1\r\nHost: switchboard.example.com\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json; charset=utf-8\r\nUser-Agent: Microsoft.Azure.SignalR.Management/1.25\r\nAccept: */*\r\nContent-Length: 44\r\n\r\n{{\"Target\":\"message\",\"Arguments\":[\"hello\"]}}"
            )
            .into_bytes(),
        ),
        (
            "WebSocket upgrade",
            format!(
                "GET /client/?hub=chat&id=ticket&access_token={token} HTTP/1.1\r\nHost: switchboard.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://app.example.com\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "health check",
            b"GET /api/health HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\n\r\n".to_vec(),
        ),
    ]
}

fn time_scanner(input: &[u8], rounds: u32) -> Duration {
    let mut out = Vec::with_capacity(input.len());
    let started = Instant::now();
    for _ in 0..rounds {
        let mut scanner = Scanner::new(Limits::default());
        out.clear();
        scanner.feed(black_box(input), &mut out).expect("valid");
        black_box(&out);
    }
    started.elapsed()
}

fn time_httparse(input: &[u8], rounds: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..rounds {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let status = request.parse(black_box(input)).expect("valid");
        black_box(status);
    }
    started.elapsed()
}

fn main() {
    let rounds = 20_000u32;
    let repeats = 10;
    println!("| request | bytes | scanner ns/req | httparse ns/req | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, input) in requests() {
        let (mut scan, mut parse) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..repeats {
            scan += time_scanner(&input, rounds);
            parse += time_httparse(&input, rounds);
        }
        let n = f64::from(rounds * repeats);
        let scan_ns = scan.as_nanos() as f64 / n;
        let parse_ns = parse.as_nanos() as f64 / n;
        println!(
            "| {name} | {} | {scan_ns:.0} | {parse_ns:.0} | {:.2}x |",
            input.len(),
            scan_ns / parse_ns
        );
    }
}
