//! Small helpers shared by the supervisor's modules: randomness and UTC timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// `n` random bytes from the kernel (getrandom; never blocks after early boot).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: getrandom writes at most `n - filled` bytes into our buffer at that offset.
        let r = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r > 0 {
            filled += r as usize;
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    b
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    hex::encode(random_bytes(n))
}

/// A uniform random number in [0, 1) (53 random bits).
pub fn random_unit() -> f64 {
    let b = random_bytes(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(&b);
    (u64::from_le_bytes(a) >> 11) as f64 / (1u64 << 53) as f64
}

/// A random (version 4) UUID, as Lambda's request ids and revision ids.
pub fn uuid4() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Now in UTC as `YYYY-MM-DDThh:mm:ss.sss` followed by `zone` (`Z`, `+0000`).
pub fn utc_timestamp(zone: &str) -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}{zone}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch of a `YYYY-MM-DDThh:mm:ss.sss` timestamp (any zone suffix is
/// taken as UTC, as lamina writes only UTC).
pub fn parse_utc_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 23 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'.' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(n(0..4)?, n(5..7)? as u32, n(8..10)? as u32);
    Some(((days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?) * 1000) + n(20..23)?)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ids() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(2026, 11, 27), 20_784);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(
            parse_utc_timestamp("1970-01-02T00:00:01.500Z"),
            Some(86_401_500)
        );
        let now = now_ms();
        let parsed = parse_utc_timestamp(&utc_timestamp("Z")).unwrap();
        assert!((now - parsed).abs() < 2000);
        let t = utc_timestamp("+0000");
        assert_eq!(t.len(), "2019-08-14T22:26:11.234+0000".len());
        let u = uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid4(), uuid4());
        assert_eq!(random_hex(16).len(), 32);
    }
}
