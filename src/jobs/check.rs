//! What `edge-agent check` says of the edge jobs: each job of the state file, its next run and
//! its last run.

use super::cron::{self, Spec};
use super::tz::Zone;
use super::{schedule, unix, LAST_RUN};
use crate::config::duration::display;
use crate::state::State;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// For `edge-agent check`: each job of the state file, its next run and its last run.
pub fn report(data_path: &Path, state: &State) -> Vec<String> {
    let (zone, warning) = Zone::from_env();
    let mut lines = Vec::new();
    if let Some(warning) = warning {
        lines.push(format!("warning: {warning}"));
    }
    let now = unix(SystemTime::now());
    let local = |t: i64| {
        let c = cron::Civil::from_local_minute(zone.local_minute(t));
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute
        )
    };
    for (id, record) in &state.jobs {
        let next = match cron::parse(&record.expression) {
            Err(e) => format!("NOT scheduled: {e}"),
            Ok(Spec::Cron(fields)) => match schedule::next_run(&fields, &zone, now) {
                Some(t) => format!("next run {} {}", local(t), zone.name),
                None => "never runs (no such date)".into(),
            },
            Ok(Spec::Every(every)) => format!("every {}", display(every)),
            Ok(Spec::Reboot) => "at each boot".into(),
        };
        let dir = data_path.join("jobs").join(id.to_string());
        let mut line = String::new();
        let read =
            fs::File::open(dir.join(LAST_RUN)).and_then(|f| f.take(4096).read_to_string(&mut line));
        let last = read.ok().and_then(|_| {
            let mut parts = line.trim_end().splitn(3, ' ');
            let started: i64 = parts.next()?.parse().ok()?;
            let ms: u64 = parts.next()?.parse().ok()?;
            Some(format!(
                "last run {} {}: {} after {}",
                local(started),
                zone.name,
                parts.next()?,
                display(Duration::from_millis(ms))
            ))
        });
        lines.push(format!(
            "job {id} v{} ({}): {next}; {}",
            record.version,
            record.expression,
            last.unwrap_or_else(|| "not run yet".into())
        ));
    }
    lines
}
