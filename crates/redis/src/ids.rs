//! Stream entry ids as log indexes. Pure.
//!
//! Redis names each stream entry `MS-SEQ`: the server's clock in milliseconds (never going
//! backwards within one stream) and a sequence within that millisecond. The engine uses the pair
//! twice: the milliseconds are the batch time every replica applies the entry at (one clock, the
//! Redis server's, like the Raft leader's stamp), and `MS << SEQ_BITS | SEQ` is the entry's log
//! index, which orders every write the way the Raft index does.

/// Bits of the index that hold the sequence within one millisecond.
pub const SEQ_BITS: u32 = 20;
const SEQ_MAX: u64 = (1 << SEQ_BITS) - 1;
const MS_MAX: u64 = u64::MAX >> SEQ_BITS;

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

/// Why an id could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("stream id {0:?} is not MS-SEQ")]
    Malformed(String),
    #[error("stream id {0:?} does not fit a log index")]
    OutOfRange(String),
}

impl EntryId {
    /// The id before every entry (`0-0`): where a replica with nothing reads from.
    pub const ORIGIN: EntryId = EntryId { ms: 0, seq: 0 };

    /// Parses `MS-SEQ`.
    pub fn parse(id: &str) -> Result<EntryId, IdError> {
        let malformed = || IdError::Malformed(id.to_owned());
        let (ms, seq) = id.split_once('-').ok_or_else(malformed)?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(malformed());
        }
        let ms: u64 = ms.parse().map_err(|_| malformed())?;
        let seq: u64 = seq.parse().map_err(|_| malformed())?;
        let entry = EntryId { ms, seq };
        entry
            .index()
            .map_err(|_| IdError::OutOfRange(id.to_owned()))?;
        Ok(entry)
    }

    /// The log index of this entry.
    pub fn index(self) -> Result<u64, IdError> {
        if self.ms > MS_MAX || self.seq > SEQ_MAX {
            return Err(IdError::OutOfRange(self.to_string()));
        }
        Ok(self.ms << SEQ_BITS | self.seq)
    }

    /// The id of a log index.
    pub fn from_index(index: u64) -> EntryId {
        EntryId {
            ms: index >> SEQ_BITS,
            seq: index & SEQ_MAX,
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn ids_and_indexes_round_trip(ms in 0u64..=MS_MAX, seq in 0u64..=SEQ_MAX) {
            let id = EntryId { ms, seq };
            let index = id.index().unwrap();
            prop_assert_eq!(EntryId::from_index(index), id);
            prop_assert_eq!(EntryId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn indexes_order_like_ids(a in (0u64..=MS_MAX, 0u64..=SEQ_MAX), b in (0u64..=MS_MAX, 0u64..=SEQ_MAX)) {
            let (a, b) = (EntryId { ms: a.0, seq: a.1 }, EntryId { ms: b.0, seq: b.1 });
            prop_assert_eq!(a.cmp(&b), a.index().unwrap().cmp(&b.index().unwrap()));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = EntryId::parse(&s);
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        for id in ["", "1", "-1", "1-", "a-1", "1-b", "1-2-3", " 1-2", "+1-2"] {
            assert!(
                matches!(EntryId::parse(id), Err(IdError::Malformed(_))),
                "{id}"
            );
        }
        let too_many = format!("1-{}", SEQ_MAX + 1);
        assert!(matches!(
            EntryId::parse(&too_many),
            Err(IdError::OutOfRange(_))
        ));
        assert!(matches!(
            EntryId::parse("18446744073709551615-0"),
            Err(IdError::OutOfRange(_))
        ));
        assert_eq!(EntryId::parse("0-0").unwrap(), EntryId::ORIGIN);
        assert_eq!(
            EntryId::parse("1700000000000-3").unwrap().to_string(),
            "1700000000000-3"
        );
    }
}
