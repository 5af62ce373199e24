//! The command line's link specs and the routing of a packet through them.
//!
//! A spec is a comma-separated list of `key=value`, for example
//! `from=127.0.0.2,to=127.0.0.3,rate=8mbit,delay=25ms,loss=0.5%,queue=100kB`.
//! `from` and `to` select the packets the link carries (by IPv4 source and
//! destination; either may be left out to match any). A packet passes every
//! link that matches it, in the order given: an uplink `from=A` and a
//! downlink `to=B` model two access links joined by a core.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::link::{LinkSpec, Loss};

/// Why a spec was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("`{0}` is not key=value")]
    NotKeyValue(String),
    #[error("unknown key `{0}` (known: from, to, rate, delay, jitter, loss, queue, reorder)")]
    UnknownKey(String),
    #[error("bad value for {key}: `{value}` ({why})")]
    BadValue { key: String, value: String, why: &'static str },
}

/// A link and the packets it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutedSpec {
    pub from: Option<Ipv4Addr>,
    pub to: Option<Ipv4Addr>,
    pub link: LinkSpec,
}

impl RoutedSpec {
    /// Whether a packet from `src` to `dst` passes this link.
    pub fn carries(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.from.is_none_or(|a| a == src) && self.to.is_none_or(|a| a == dst)
    }
}

/// Parses one `--link` argument.
pub fn parse_link(text: &str) -> Result<RoutedSpec, SpecError> {
    let mut spec = RoutedSpec { from: None, to: None, link: LinkSpec::default() };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None if part == "reorder" => ("reorder", "yes"),
            None => return Err(SpecError::NotKeyValue(part.into())),
        };
        let bad = |why| SpecError::BadValue { key: key.into(), value: value.into(), why };
        match key {
            "from" => spec.from = Some(value.parse().map_err(|_| bad("an IPv4 address"))?),
            "to" => spec.to = Some(value.parse().map_err(|_| bad("an IPv4 address"))?),
            "rate" => spec.link.rate_bps = Some(parse_rate(value).ok_or_else(|| bad("like 8mbit, 500kbit or 2gbit"))?),
            "delay" => spec.link.delay = parse_duration(value).ok_or_else(|| bad("like 25ms or 1.5ms"))?,
            "jitter" => spec.link.jitter = parse_duration(value).ok_or_else(|| bad("like 5ms"))?,
            "loss" => spec.link.loss = parse_loss(value).ok_or_else(|| bad("like 0.5% or ge:P_GB:P_BG:LOSS_BAD[:LOSS_GOOD]"))?,
            "queue" => spec.link.queue_bytes = parse_bytes(value).ok_or_else(|| bad("like 64kB, 100000 or 1MB"))?,
            "reorder" => spec.link.reorder = matches!(value, "yes" | "true" | "1"),
            _ => return Err(SpecError::UnknownKey(key.into())),
        }
    }
    Ok(spec)
}

/// The indexes of the links a packet passes, in order.
pub fn route(specs: &[RoutedSpec], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<usize> {
    specs.iter().enumerate().filter(|(_, s)| s.carries(src, dst)).map(|(i, _)| i).collect()
}

fn split_number(text: &str) -> Option<(f64, String)> {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let number: f64 = text[..end].parse().ok()?;
    (number.is_finite() && number >= 0.0).then(|| (number, text[end..].trim().to_ascii_lowercase()))
}

fn parse_rate(text: &str) -> Option<u64> {
    let (n, unit) = split_number(text)?;
    let scale = match unit.as_str() {
        "" | "bit" | "bps" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return None,
    };
    let bps = (n * scale).round();
    (1.0..=1e12).contains(&bps).then_some(bps as u64)
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (n, unit) = split_number(text)?;
    let secs = match unit.as_str() {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return None,
    };
    (secs <= 60.0).then(|| Duration::from_secs_f64(secs))
}

fn parse_bytes(text: &str) -> Option<u64> {
    let (n, unit) = split_number(text)?;
    let scale = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        _ => return None,
    };
    let bytes = (n * scale).round();
    (1.0..=1e10).contains(&bytes).then_some(bytes as u64)
}

fn probability(text: &str) -> Option<f64> {
    let p = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
        None => text.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&p).then_some(p)
}

fn parse_loss(text: &str) -> Option<Loss> {
    if let Some(params) = text.strip_prefix("ge:") {
        let p: Vec<f64> = params.split(':').map(probability).collect::<Option<_>>()?;
        return match p[..] {
            [good_to_bad, bad_to_good, loss_when_bad] => {
                Some(Loss::Bursty { good_to_bad, bad_to_good, loss_when_bad, loss_when_good: 0.0 })
            }
            [good_to_bad, bad_to_good, loss_when_bad, loss_when_good] => {
                Some(Loss::Bursty { good_to_bad, bad_to_good, loss_when_bad, loss_when_good })
            }
            _ => None,
        };
    }
    let p = probability(text)?;
    Some(if p == 0.0 { Loss::None } else { Loss::Random(p) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spec_parses() {
        let s = parse_link("from=127.0.0.2,to=127.0.0.3,rate=8mbit,delay=25ms,jitter=2ms,loss=0.5%,queue=100kB").unwrap();
        assert_eq!(s.from, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s.to, Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(s.link.rate_bps, Some(8_000_000));
        assert_eq!(s.link.delay, Duration::from_millis(25));
        assert_eq!(s.link.jitter, Duration::from_millis(2));
        assert_eq!(s.link.loss, Loss::Random(0.005));
        assert_eq!(s.link.queue_bytes, 100_000);
        assert!(!s.link.reorder);
    }

    #[test]
    fn bursty_loss_and_defaults() {
        let s = parse_link("to=127.0.1.4,loss=ge:0.01:0.25:50%,reorder").unwrap();
        assert_eq!(s.from, None);
        assert_eq!(s.link.loss, Loss::Bursty { good_to_bad: 0.01, bad_to_good: 0.25, loss_when_bad: 0.5, loss_when_good: 0.0 });
        assert!(s.link.reorder);
        assert_eq!(s.link.rate_bps, None);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert_eq!(parse_link("rate=fast").unwrap_err().to_string(), "bad value for rate: `fast` (like 8mbit, 500kbit or 2gbit)");
        assert!(matches!(parse_link("colour=blue"), Err(SpecError::UnknownKey(_))));
        assert!(matches!(parse_link("delay"), Err(SpecError::NotKeyValue(_))));
        assert!(parse_link("loss=150%").is_err());
        assert!(parse_link("loss=ge:0.1").is_err());
        assert!(parse_link("delay=-5ms").is_err());
        assert!(parse_link("from=localhost").is_err());
    }

    #[test]
    fn a_packet_passes_the_uplink_then_the_downlink() {
        let specs: Vec<RoutedSpec> = ["from=127.0.1.1,delay=10ms", "to=127.0.1.2,delay=10ms", "from=127.0.1.2", "to=127.0.1.1"]
            .iter()
            .map(|t| parse_link(t).unwrap())
            .collect();
        let a = Ipv4Addr::new(127, 0, 1, 1);
        let b = Ipv4Addr::new(127, 0, 1, 2);
        assert_eq!(route(&specs, a, b), vec![0, 1]);
        assert_eq!(route(&specs, b, a), vec![2, 3]);
        assert!(route(&specs, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).is_empty());
    }
}
