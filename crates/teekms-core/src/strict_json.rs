//! JSON that means one thing: a document in which an object repeats a member name is
//! refused (serde_json, like most parsers, would silently keep the last value, so two
//! readers of the same policy could disagree about what it grants).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Refuses `text` if any object in it, at any depth, names a member twice. Other syntax
/// errors are left to the parser that reads the document.
pub fn reject_duplicate_members(text: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    match Unique.deserialize(&mut de) {
        Ok(()) => Ok(()),
        Err(e) if e.is_data() => Err(e.to_string()),
        // Not JSON at all: the real parser says why.
        Err(_) => Ok(()),
    }
}

/// Walks any JSON value, checking every object's member names.
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Unique)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !seen.insert(name.clone()) {
                return Err(de::Error::custom(format!(
                    "the member {name:?} appears twice in one object"
                )));
            }
            map.next_value_seed(Unique)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_members_are_refused_at_any_depth() {
        assert!(reject_duplicate_members(r#"{"a":1,"b":{"c":[{"d":1}]}}"#).is_ok());
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"rules":[{"principals":[],"principals":[]}]}"#,
            r#"[{"x":{"y":1,"y":1}}]"#,
        ] {
            let e = reject_duplicate_members(text).unwrap_err();
            assert!(e.contains("appears twice"), "{text}: {e}");
        }
        // Escapes name the same member.
        assert!(reject_duplicate_members(r#"{"a":1,"\u0061":2}"#).is_err());
    }
}
