//! Binary encoding of the embedded store's records: a key's current value and
//! the events kept in history. Fixed-width little-endian integers and
//! length-prefixed byte strings; decoding checks every length, so a damaged
//! record is reported, never a panic.

use super::{Event, KeyValue};

/// A record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("damaged record: {0}")]
pub struct DecodeError(&'static str);

/// Result with [`DecodeError`].
pub type Result<T, E = DecodeError> = std::result::Result<T, E>;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64> {
        let bytes = self.take(8)?;
        Ok(i64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(len as usize)
    }

    fn done(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_meta(out: &mut Vec<u8>, kv: &KeyValue) {
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        out.extend_from_slice(&n.to_le_bytes());
    }
}

fn read_kv(key: String, r: &mut Reader<'_>) -> Result<KeyValue> {
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let version = r.i64()?;
    let lease = r.i64()?;
    let value = r.bytes()?.to_vec();
    Ok(KeyValue {
        key,
        value,
        create_revision,
        mod_revision,
        version,
        lease,
    })
}

/// Encodes a key's current record (the key itself is the table key).
pub fn encode_value(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(36 + kv.value.len());
    put_meta(&mut out, kv);
    put_bytes(&mut out, &kv.value);
    out
}

/// Decodes a key's current record.
pub fn decode_value(key: &str, buf: &[u8]) -> Result<KeyValue> {
    let mut r = Reader { buf };
    let kv = read_kv(key.to_owned(), &mut r)?;
    r.done()?;
    Ok(kv)
}

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// Encodes the events of one revision.
pub fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        let (tag, kv) = match event {
            Event::Put(kv) => (PUT, kv),
            Event::Delete(kv) => (DELETE, kv),
        };
        out.push(tag);
        put_bytes(&mut out, kv.key.as_bytes());
        put_meta(&mut out, kv);
        put_bytes(&mut out, &kv.value);
    }
    out
}

/// Decodes the events of one revision.
pub fn decode_events(buf: &[u8]) -> Result<Vec<Event>> {
    let mut r = Reader { buf };
    let count = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    let mut events = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let tag = r.u8()?;
        let key =
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("key not utf-8"))?;
        let kv = read_kv(key, &mut r)?;
        events.push(match tag {
            PUT => Event::Put(kv),
            DELETE => Event::Delete(kv),
            _ => return Err(DecodeError("unknown event tag")),
        });
    }
    r.done()?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8], rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
            lease: 0x1234,
        }
    }

    #[test]
    fn value_round_trips() {
        let kv = kv("/lb/a", b"{\"x\":1}", 7);
        assert_eq!(decode_value("/lb/a", &encode_value(&kv)).unwrap(), kv);
    }

    #[test]
    fn events_round_trip() {
        let events = vec![
            Event::Put(kv("/a", b"1", 5)),
            Event::Delete(kv("/b", b"", 5)),
        ];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
    }

    #[test]
    fn damaged_records_are_errors() {
        let buf = encode_value(&kv("/a", b"hello", 1));
        for cut in 0..buf.len() {
            assert!(decode_value("/a", &buf[..cut]).is_err(), "cut at {cut}");
        }
        let events = encode_events(&[Event::Put(kv("/a", b"1", 1))]);
        for cut in 0..events.len() {
            assert!(decode_events(&events[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = encode_value(&kv("/a", b"x", 1));
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_value("/a", &huge).is_err());
    }
}
