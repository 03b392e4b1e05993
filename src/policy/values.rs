//! The value types a policy is written in: sizes, fractions, durations.
//!
//! Each parses from what an operator types (`512M`, `85%`, `100ms`) and
//! prints back the same way, so `check` shows values as they were meant.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A number of bytes: an integer, or a number with a K, M, G or T suffix
/// (powers of 1024, as systemd's `MemoryMax=`), optionally followed by `B`
/// or `iB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A fraction of a whole, written as a percentage: `85%`, `92.5%`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Fraction(pub f64);

/// A duration: a number and a unit (`us`, `ms`, `s`, `min` or `m`, `h`),
/// several of them in a row (`1m30s`), or `0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

const SIZE_UNITS: [(char, u64); 4] = [
    ('T', 1 << 40),
    ('G', 1 << 30),
    ('M', 1 << 20),
    ('K', 1 << 10),
];

pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (number, unit) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => (&t[..t.len() - 1], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let multiplier = if unit == ' ' {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| format!("unknown size unit {unit:?} in {text:?} (use K, M, G or T)"))?
    };
    let value = number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| !v.is_nan())
        .ok_or_else(|| {
            format!("{text:?} is not a size (write e.g. 512M, 2G or a number of bytes)")
        })?;
    if value < 0.0 {
        return Err(format!("{text:?} is not a size: it must be positive"));
    }
    let bytes = value * multiplier as f64;
    // Also catches infinity (`1e400K`): compared as f64, before any cast.
    if bytes > MAX_SIZE as f64 {
        return Err(too_large(&format!("{text:?}")));
    }
    Ok(bytes.round() as u64)
}

/// The largest size a policy may give (1024T). Far beyond any machine's
/// memory, and far below `u64::MAX`, which systemd's `MemoryMax=` reads as
/// "infinity": a typo must not silently turn a limit off.
pub const MAX_SIZE: u64 = 1 << 50;

fn too_large(what: &str) -> String {
    format!(
        "{what} is too large: sizes go up to {}",
        format_size(MAX_SIZE)
    )
}

/// uWSGI's megabytes in bytes, or the error when that is past [`MAX_SIZE`].
pub fn megabytes_to_bytes(mb: u64) -> Result<u64, String> {
    mb.checked_mul(1 << 20)
        .filter(|b| *b <= MAX_SIZE)
        .ok_or_else(|| too_large(&format!("{mb} megabytes")))
}

fn size_from_int(v: i64) -> Result<u64, String> {
    let bytes = non_negative(v)?;
    if bytes > MAX_SIZE {
        return Err(too_large(&format!("{v} bytes")));
    }
    Ok(bytes)
}

pub fn format_size(bytes: u64) -> String {
    for (unit, m) in SIZE_UNITS {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

/// A size for people to read: three significant digits, e.g. `62.2M`.
/// (Policies print with [`format_size`], which is exact.)
pub fn human_size(bytes: u64) -> String {
    for (unit, m) in SIZE_UNITS {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
        if bytes >= m {
            let v = bytes as f64 / m as f64;
            return match v {
                v if v >= 100.0 => format!("{v:.0}{unit}"),
                v if v >= 10.0 => format!("{v:.1}{unit}"),
                v => format!("{v:.2}{unit}"),
            };
        }
    }
    format!("{bytes}B")
}

pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let number = text
        .trim()
        .strip_suffix('%')
        .ok_or_else(|| format!("{text:?} is not a percentage (write e.g. \"85%\")"))?;
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (write e.g. \"85%\")"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("{text:?} must be between 0% and 100%"));
    }
    Ok(value / 100.0)
}

/// The longest duration a policy may give: far beyond any useful interval,
/// cool-down or lifetime, and far below what would overflow when the daemon
/// adds it to a clock reading (`Instant + Duration` panics on overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (write e.g. 100ms, 30s, 5min, 1h)");
    let too_long = || format!("{text:?} is too long: durations go up to 365 days (8760h)");
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let (seconds, tail) = duration_term(rest).ok_or_else(bad)?;
        rest = tail;
        // Checked as f64 first: a long run of digits parses as infinity.
        if seconds > MAX_DURATION.as_secs_f64() {
            return Err(too_long());
        }
        let term = Duration::try_from_secs_f64(seconds).map_err(|_| bad())?;
        total = total
            .checked_add(term)
            .filter(|t| *t <= MAX_DURATION)
            .ok_or_else(too_long)?;
    }
    Ok(total)
}

/// The `<number><unit>` at the start of `text`, in seconds, and the rest.
fn duration_term(text: &str) -> Option<(f64, &str)> {
    let digits = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let value: f64 = text[..digits].parse().ok()?;
    let rest = &text[digits..];
    let unit_len = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let unit = match &rest[..unit_len] {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some((value * unit, &rest[unit_len..]))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.is_zero() {
        "0".into()
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Accepts either a TOML string (parsed by `parse`) or an integer (taken
/// through `from_int`), so `soft_limit = 1048576` and `"1M"` both work.
struct TextOrInt<T> {
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
    from_int: fn(i64) -> Result<T, String>,
}

impl<T> Visitor<'_> for TextOrInt<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.from_int)(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        let v = i64::try_from(v).map_err(|_| E::custom("number too large"))?;
        (self.from_int)(v).map_err(E::custom)
    }
}

fn non_negative(v: i64) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{v} must not be negative"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt {
            what: "a size such as \"512M\" or a number of bytes",
            parse: |s| parse_size(s).map(ByteSize),
            from_int: |v| size_from_int(v).map(ByteSize),
        })
    }
}

/// uWSGI's `reload-on-rss` and `evil-reload-on-rss` count megabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Megabytes(pub u64);

impl<'de> Deserialize<'de> for Megabytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt {
            what: "a number of megabytes, as in uWSGI",
            parse: |s| {
                s.trim()
                    .parse::<u64>()
                    .map(Megabytes)
                    .map_err(|_| format!("{s:?} is not a number of megabytes"))
            },
            from_int: |v| non_negative(v).map(Megabytes),
        })
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt {
            what: "a percentage such as \"85%\"",
            parse: |s| parse_fraction(s).map(Fraction),
            from_int: |v| Err(format!("{v} needs a % sign and quotes: \"{v}%\"")),
        })
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt {
            what: "a duration such as \"100ms\" or \"30s\"",
            parse: |s| parse_duration(s).map(Span),
            from_int: |v| match v {
                0 => Ok(Span(Duration::ZERO)),
                _ => Err(format!("{v} needs a unit and quotes: \"{v}s\"")),
            },
        })
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(self.0))
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}%", (self.0 * 1000.0).round() / 10.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn sizes_print_back() {
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(3 << 30), "3G");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(65_183_744), "62.2M");
        assert_eq!(human_size(2_074_611_712), "1.93G");
        assert_eq!(human_size(300 << 20), "300M");
        assert_eq!(human_size(512), "512B");
        assert_eq!(
            human_size(60 << 20),
            "60M",
            "exact sizes as written in policies"
        );
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("85%"), Ok(0.85));
        assert_eq!(parse_fraction(" 92.5 %"), Ok(0.925));
        assert!(parse_fraction("85").is_err());
        assert!(parse_fraction("120%").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn durations_past_a_year_are_too_long_not_a_panic() {
        let too_long = |t: &str| parse_duration(t).unwrap_err().contains("is too long");
        assert!(too_long(&"9223372036854775807s".repeat(3)));
        assert!(too_long("18446744073709551615s18446744073709551615s"));
        assert!(too_long(&format!("1{}s", "0".repeat(400))));
        assert!(too_long("8760h1us"));
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration(&"1s".repeat(10_000)),
            Ok(Duration::from_secs(10_000))
        );
    }

    #[test]
    fn sizes_past_the_maximum_are_too_large() {
        let too_large = |t: &str| parse_size(t).unwrap_err().contains("too large");
        assert!(too_large("1025T"));
        assert!(too_large("1e400K"));
        assert!(too_large("99999999999999999999T"));
        assert_eq!(parse_size("1024T"), Ok(MAX_SIZE));
        assert!(parse_size("nanK").unwrap_err().contains("is not a size"));
        assert_eq!(megabytes_to_bytes(256), Ok(256 << 20));
        assert_eq!(
            megabytes_to_bytes(1 << 44).unwrap_err(),
            "17592186044416 megabytes is too large: sizes go up to 1024T"
        );
        assert!(megabytes_to_bytes(u64::MAX).is_err());
    }

    #[test]
    fn durations_print_back() {
        for text in ["100ms", "30s", "5min", "1h", "0", "250us"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
