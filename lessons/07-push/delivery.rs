//! Delivery by callback: the service connects to the device's own listening
//! socket, presents the device's token, sends each notification and waits
//! for its acknowledgement. Each device has a thread of its own, and every
//! step a deadline, so a device that black-holes, never reads or answers
//! late holds up its own thread only, never the service or other devices.

use std::io::{self, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::service::{Notification, Service, Work};
use crate::wire::{read_line, DeadlineReader, Line};

/// Deliver `name`'s notifications as they come, for as long as the service
/// runs.
pub fn deliver_for_ever(service: &Service, name: &str) {
    loop {
        let work = service.next_work(name);
        let result = deliver(service, name, &work);
        if let Err(error) = &result {
            eprintln!("{name} at {} is unreachable: {error}", work.callback);
        }
        service.attempt_ended(name, work.generation, result.is_ok());
    }
}

/// One connection to the device: the lost count if any, then every waiting
/// notification, each forgotten once the device has acknowledged it.
fn deliver(service: &Service, name: &str, work: &Work) -> io::Result<()> {
    // A device that has not answered within this long (`--answer-time`, 1 s
    // by default), at any step, is unreachable: its notifications wait.
    let answer_time = service.answer_time;
    let stream = TcpStream::connect_timeout(&work.callback, answer_time)?;
    // Each frame is small and should leave at once.
    stream.set_nodelay(true)?;
    // A device that takes no byte for this long is not reading.
    stream.set_write_timeout(Some(answer_time))?;
    let mut reader = BufReader::new(DeadlineReader::new(&stream));
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + answer_time))?;
    if work.lost > 0 {
        let frame = format!("LOST {} {}\n", work.token, work.lost);
        send_and_wait_ack(&stream, &mut reader, answer_time, frame.as_bytes(), "LOST")?;
        service.lost_told(name, work.lost);
    }
    // TODO 2 (slides/07-push.md, "Delivery by callback"): for each of
    // `work.notes`, in order, send its frame (`push_frame`) and wait for
    // `ACK <id>` (`send_and_wait_ack`, which bounds the wait); only then
    // tell the service (`service.delivered`), which forgets it. An error
    // returns at once: the rest wait for the next attempt.
    Err(io::Error::other(
        "TODO 2 in lessons/07-push/delivery.rs: nothing is pushed yet",
    ))
}

/// `PUSH <token> <id> <from> <length>` and the body.
fn push_frame(token: &str, note: &Notification) -> Vec<u8> {
    let mut frame = format!(
        "PUSH {token} {} {} {}\n",
        note.id,
        note.from,
        note.body.len()
    )
    .into_bytes();
    frame.extend_from_slice(&note.body);
    frame
}

/// Send one frame and read `ACK <what>` within `answer_time`.
fn send_and_wait_ack(
    mut stream: &TcpStream,
    reader: &mut BufReader<DeadlineReader>,
    answer_time: Duration,
    frame: &[u8],
    what: &str,
) -> io::Result<()> {
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + answer_time))?;
    stream.write_all(frame)?;
    let failed = |kind, message: String| Err(io::Error::new(kind, message));
    let answer = match read_line(reader) {
        Ok(Line::Complete(line)) => line,
        Ok(Line::TooLong) => b"(a line too long)".to_vec(),
        Ok(Line::Closed) => {
            let message = format!("the device closed the connection without `ACK {what}`");
            return failed(ErrorKind::UnexpectedEof, message);
        }
        // A read past its timeout fails with WouldBlock on Linux, TimedOut
        // elsewhere: either way the device did not answer in time.
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            let message = format!("no `ACK {what}` within {} s", answer_time.as_secs_f64());
            return failed(ErrorKind::TimedOut, message);
        }
        Err(error) => return Err(error),
    };
    if answer == format!("ACK {what}").as_bytes() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&answer);
        failed(
            ErrorKind::InvalidData,
            format!("the device answered {said:?}, not `ACK {what}`"),
        )
    }
}
