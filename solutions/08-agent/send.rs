//! An application server: it hands one notification to the push service
//! and says whether the service took it.

use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::frame::{read_frame, write_frame};
use crate::protocol::{self, Message};

pub fn run(
    service: &str,
    to: &str,
    ttl: Duration,
    collapse: Option<&str>,
    text: &str,
) -> Result<()> {
    let (device, app) = to
        .split_once('/')
        .ok_or_else(|| anyhow!("{to:?} is not DEVICE/APP, such as ada/mail"))?;
    let send = Message::Send {
        device: protocol::name(device).map_err(anyhow::Error::msg)?,
        app: protocol::name(app).map_err(anyhow::Error::msg)?,
        ttl,
        collapse: collapse
            .map(protocol::name)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        text: protocol::text(text).map_err(anyhow::Error::msg)?,
    };
    let mut stream = TcpStream::connect(service)
        .map_err(|error| anyhow!("nothing is listening at {service} ({error})"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write_frame(&mut stream, &send.encode())?;
    let answer = read_frame(&mut stream)
        .map_err(|error| anyhow!("no answer from the service at {service}: {error}"))?;
    match Message::parse(&answer).map_err(anyhow::Error::msg)? {
        Message::Ok { id } => println!("accepted as {to} #{id}"),
        Message::Err { reason } => bail!("the service refused it: {reason}"),
        other => bail!("the service answered {:?}, not OK", other.encode()),
    }
    Ok(())
}
