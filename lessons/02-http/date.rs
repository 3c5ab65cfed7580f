//! The `Date` header: when the response was made, in the one format HTTP
//! allows a server to send (RFC 9110, section 5.6.7, "IMF-fixdate"):
//! `Sun, 06 Nov 1994 08:49:37 GMT`. An origin server with a clock must send
//! it (section 6.6.1); caches use it to tell how old a response is.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

thread_local! {
    /// The last date this thread wrote, and the second it stands for.
    static LAST_DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `time` as an IMF-fixdate, in GMT (UTC), as HTTP wants it.
///
/// The text changes once a second, yet a busy server answers thousands of
/// requests a second: written anew for each, the date was a fifth of the
/// work a request cost this program outside the kernel (slides/02-http.md,
/// "Work a request costs"). So each thread keeps the last one it wrote and
/// writes it again only when the second has changed. nginx and hyper keep
/// their date text the same way; a thread of its own, rather than a lock,
/// keeps threads from waiting on one another for it.
pub fn http_date(time: SystemTime) -> String {
    // A clock set before 1970 is wrong anyway; it reads as 1970.
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    LAST_DATE.with_borrow_mut(|(second, text)| {
        if *second != seconds {
            *text = imf_fixdate(seconds);
            *second = seconds;
        }
        text.clone()
    })
}

/// The IMF-fixdate of the second `seconds` after 1970. Without a crate: the
/// calendar arithmetic is short, and a good exercise in reading a
/// specification.
fn imf_fixdate(seconds: u64) -> String {
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_date(days);
    // 1 January 1970 was a Thursday.
    let weekday = WEEKDAYS[((days + 4) % 7) as usize];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        MONTHS[month as usize - 1],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The year, month (1 to 12) and day (1 to 31) that are `days` after
/// 1 January 1970, in the Gregorian calendar.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Count from 1 March of year 0: then the leap day is the last day of a
    // year, and the 400-year cycle of leap years (an "era", 146 097 days)
    // lines up. 1970-01-01 is day 719 468 of that count.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    // Every 4th year is a leap year, but not every 100th, unless a 400th.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28/29
    // days; 153 days make each run of five.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    // January and February belong to the next year.
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}
