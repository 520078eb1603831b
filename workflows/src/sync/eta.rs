//! How long a sync has left: what `cairn sync` prints while it waits and the dashboard
//! shows per stream.

use serde::Serialize;

/// An estimate of the records still to come and when they will have landed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Eta {
    /// Records still to come.
    pub remaining: u64,
    /// The pace it is estimated at, records per second.
    pub rate: f64,
    /// Seconds left at that pace; `None` while nothing has landed yet.
    pub seconds: Option<f64>,
    /// Where the total came from.
    pub basis: Basis,
}

/// Where an estimate's total came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The vendor said how many records there are.
    VendorTotal,
    /// The vendor says nothing; the stream's last full read is the guess.
    LastFullRead,
}

impl Eta {
    /// The estimate for a sync that has landed `done` records at `rate` per second,
    /// from the vendor's `total` when it reports one, else from the size of the
    /// stream's last full read (`known`); `None` when neither is known.
    pub fn estimate(done: u64, rate: f64, total: Option<u64>, known: Option<u64>) -> Option<Self> {
        let (total, basis) = match (total, known) {
            (Some(total), _) => (total, Basis::VendorTotal),
            (None, Some(known)) if known > 0 => (known, Basis::LastFullRead),
            _ => return None,
        };
        let remaining = total.saturating_sub(done);
        let seconds = if remaining == 0 {
            Some(0.0)
        } else if rate.is_finite() && rate > 0.0 {
            Some(remaining as f64 / rate)
        } else {
            None
        };
        Some(Self {
            remaining,
            rate: if rate.is_finite() { rate.max(0.0) } else { 0.0 },
            seconds,
            basis,
        })
    }

    /// `about 3 min left (vendor total)`, or why there is no figure yet.
    pub fn describe(&self) -> String {
        let basis = match self.basis {
            Basis::VendorTotal => "vendor total",
            Basis::LastFullRead => "guessed from the last full read",
        };
        match self.seconds {
            Some(secs) if secs < 1.0 => format!("finishing ({basis})"),
            Some(secs) => format!("about {} left ({basis})", duration(secs)),
            None => format!("{} to go, pace unknown yet ({basis})", self.remaining),
        }
    }
}

fn duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendors_total_comes_first_and_the_last_full_read_stands_in() {
        let eta = Eta::estimate(400, 100.0, Some(1000), Some(5000)).unwrap();
        assert_eq!(
            (eta.remaining, eta.seconds, eta.basis),
            (600, Some(6.0), Basis::VendorTotal)
        );
        let eta = Eta::estimate(400, 100.0, None, Some(1000)).unwrap();
        assert_eq!((eta.remaining, eta.basis), (600, Basis::LastFullRead));
        assert_eq!(
            eta.describe(),
            "about 6 s left (guessed from the last full read)"
        );
        assert!(Eta::estimate(400, 100.0, None, None).is_none());
        assert!(Eta::estimate(400, 100.0, None, Some(0)).is_none());
    }

    #[test]
    fn no_pace_yet_gives_no_time_and_more_than_the_total_gives_zero() {
        let eta = Eta::estimate(0, 0.0, Some(10), None).unwrap();
        assert_eq!(eta.seconds, None);
        assert_eq!(eta.describe(), "10 to go, pace unknown yet (vendor total)");
        assert_eq!(
            Eta::estimate(12, f64::NAN, Some(10), None).unwrap().seconds,
            Some(0.0)
        );
        assert_eq!(duration(3725.0), "1 h 2 min");
    }
}
