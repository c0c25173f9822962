//! Edge jobs end to end: the real binary, the fake Portainer's `schedules` and job log route.
//! `@every 1s` drives the fast tests; one test waits for a real `* * * * *` minute (≤ 65 s).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use support::agent::{Agent, Running};
use support::{EdgeJob, FakePortainer, Rules, Transport};

/// The log scenario against both servers: CE 2.23 answers 404 for a log of a job no longer
/// assigned, CE 2.45 a 500 that must not be retried either.
mod jobs_run_upload_logs_update_and_stop_when_removed {
    #[test]
    fn v2_23() {
        super::jobs_run_upload_logs_update_and_stop_when_removed(super::Rules::V2_23)
    }
    #[test]
    fn v2_45() {
        super::jobs_run_upload_logs_update_and_stop_when_removed(super::Rules::V2_45)
    }
}

const WAIT: Duration = Duration::from_secs(15);

fn job(id: i64, cron: &str, script: &str, version: i64) -> EdgeJob {
    EdgeJob {
        id,
        cron: cron.into(),
        script: script.into(),
        version,
        collect_logs: false,
    }
}

fn start(server: &FakePortainer) -> (Agent, Running) {
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_ID=device-1\n",
        agent.key(server, 3)
    ));
    let running = agent.spawn(&mut agent.command(&[]));
    (agent, running)
}

fn wait_for(what: &str, running: &Running, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Gone, or a zombie nobody reaped (PID 1 of a container may not).
fn ended(pid: &str) -> bool {
    let stat = read(Path::new(&format!("/proc/{}/stat", pid.trim())));
    stat.is_empty()
        || stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

fn jobs_run_upload_logs_update_and_stop_when_removed(rules: Rules) {
    let server = FakePortainer::start_with(Transport::Plain, rules);
    server.add_endpoint(3, None);
    server.set_checkin(0.05);
    let script = "echo \"run by $PORTAINER_EDGE_ID in $PWD\"\necho oops >&2\n";
    server.set_jobs(
        3,
        &[
            job(7, "@every 1s", script, 1),
            job(9, "61 * * * *", "echo never", 1),
        ],
    );
    let (agent, running) = start(&server);
    let dir = agent.data.join("jobs/7");
    running.wait_log("edge job 7 finished: exit status 0 after", WAIT);
    running.wait_log(
        "edge job 9: cron expression minute field \"61\": 61 is out of range 0-59; this job does not run",
        WAIT,
    );
    let mode = std::fs::metadata(dir.join("script"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let output = read(&dir.join("output.log"));
    let pwd = dir.canonicalize().unwrap();
    assert_eq!(
        output,
        format!("run by device-1 in {}\noops\n", pwd.display())
    );
    assert!(
        !agent.data.join("jobs/9/output.log").exists(),
        "a bad job never runs"
    );
    assert!(agent
        .state_text()
        .contains(r#""7":{"version":1,"expression":"@every 1s"}"#));

    // Portainer asks for the log: it is sent once, with the device's output.
    let mut asking = server.jobs(3);
    asking[0].collect_logs = true;
    server.set_jobs(3, &asking);
    wait_for("the log is uploaded", &running, || {
        server.job_log(3, 7).is_some()
    });
    assert!(server.job_log(3, 7).unwrap().contains("run by device-1"));
    assert!(!server.jobs(3)[0].collect_logs);
    running.wait_log("edge job 7: log sent to Portainer", WAIT);
    let uploads = |server: &FakePortainer| {
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/api/endpoints/3/edge/jobs/7/logs")
            .count()
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(uploads(&server), 1);

    // A failing log route is retried with backoff until it answers.
    server.set_job_log_fault(Some(503));
    let mut asking = server.jobs(3);
    asking[0].collect_logs = true;
    server.set_jobs(3, &asking);
    running.wait_log(
        "edge job 7: cannot send its log to Portainer (HTTP 503",
        WAIT,
    );
    server.set_job_log_fault(None);
    wait_for("the upload is retried", &running, || {
        !server.jobs(3)[0].collect_logs
    });

    // A new version replaces the script.
    server.set_jobs(3, &[job(7, "@every 1s", "echo second version\n", 2)]);
    wait_for("the new script runs", &running, || {
        read(&dir.join("output.log")) == "second version\n"
    });
    assert_eq!(read(&dir.join("script")), "echo second version\n");
    running.wait_log("edge job 7 updated: v1 -> v2", WAIT);
    assert!(
        !agent.data.join("jobs/9").exists(),
        "job 9 is gone with its folder"
    );

    // Removing a job stops its run, children included, and deletes its folder.
    let pid_file = agent.dir.path().join("sleep.pid");
    let sleeper = format!("sleep 300 &\necho $! > {}\nwait\n", pid_file.display());
    server.set_jobs(3, &[job(7, "@every 1s", &sleeper, 3)]);
    wait_for("the sleep starts", &running, || !read(&pid_file).is_empty());
    let pid = read(&pid_file);
    std::thread::sleep(Duration::from_millis(1500));
    running.wait_log("edge job 7: the run started at", WAIT);
    server.set_jobs(3, &[]);
    wait_for("the folder is removed", &running, || !dir.exists());
    running.wait_log("edge job 7 finished: killed by SIGTERM", WAIT);
    assert!(ended(&pid), "the job's sleep {pid} still runs");
    assert!(
        agent.state_text().contains(r#""jobs":{}"#),
        "{}",
        agent.state_text()
    );

    // A log asked for while the route fails, of a job unassigned before the retry: the
    // server's refusal (2.23: 404; 2.45: 500 "Unable to verify...") is final.
    server.set_job_log_fault(Some(503));
    let mut asked = job(7, "@every 1s", "echo last\n", 4);
    asked.collect_logs = true;
    server.set_jobs(3, &[asked]);
    let failing = "edge job 7: cannot send its log to Portainer (HTTP 503";
    wait_for("the upload fails", &running, || {
        running.log().matches(failing).count() >= 2
    });
    server.set_jobs(3, &[]);
    server.set_job_log_fault(None);
    let refused = match rules {
        Rules::V2_23 => "edge job 7: Portainer refused its log (HTTP 404",
        Rules::V2_45 => "the job no longer targets this environment; not sent again",
    };
    running.wait_log(refused, Duration::from_secs(90));
    let sent = uploads(&server);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(uploads(&server), sent, "not retried");
    assert_eq!(running.log().matches(refused).count(), 1, "logged once");
}

#[test]
fn agent_stop_ends_running_jobs() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    let (agent, mut running) = start(&server);
    let pid_file = agent.dir.path().join("sleep.pid");
    let script = format!(
        "trap '' TERM\nsleep 300 &\necho $! > {}\nwait\n",
        pid_file.display()
    );
    server.set_jobs(3, &[job(4, "@every 1s", &script, 1)]);
    wait_for("the job starts", &running, || !read(&pid_file).is_empty());
    let pid = read(&pid_file);
    running.signal(nix::sys::signal::Signal::SIGTERM);
    // The shell and its sleep ignore SIGTERM: SIGKILL after 10 s ends them.
    let status = running
        .wait_exit(Duration::from_secs(15))
        .expect("the agent stops");
    assert!(status.success(), "{}", running.log());
    assert!(ended(&pid));
    let log = running.log();
    assert!(log.contains("stopping 1 edge job run(s)"), "{log}");
    assert!(log.contains("sending SIGKILL"), "{log}");
}

#[test]
fn restart_keeps_the_schedule_offline_and_check_lists_it() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    server.set_jobs(3, &[job(8, "* * * * *", "date +%s >> runs\n", 1)]);
    let (agent, running) = start(&server);
    running.wait_log("edge job 8 v1 scheduled (* * * * *)", WAIT);
    wait_for("the job is saved", &running, || {
        agent.state_text().contains(r#""8":{"version":1"#)
    });
    drop(running);
    drop(server);

    // Portainer is gone: the job still runs at the next minute.
    let running = agent.spawn(&mut agent.command(&[]));
    running.wait_log("edge jobs: 1 scheduled from the state file", WAIT);
    running.wait_log(
        "edge job 8 finished: exit status 0",
        Duration::from_secs(65),
    );
    running.wait_log("poll failed", WAIT);
    let runs = read(&agent.data.join("jobs/8/runs"));
    let at: u64 = runs.trim().parse().unwrap();
    assert!(at % 60 < 5, "runs at the minute boundary, not at {at}");

    let out = agent.command(&["check"]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("job 8 v1 (* * * * *): next run "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.contains("; last run ") && line.contains(": exit status 0 after"),
        "{line}"
    );
}

#[test]
fn reboot_jobs_run_once_per_boot() {
    let server = FakePortainer::start(Transport::Plain);
    server.add_endpoint(3, None);
    server.set_jobs(3, &[job(5, "@reboot", "echo booted >> ../boots\n", 1)]);
    let (agent, running) = start(&server);
    wait_for("the job is saved", &running, || {
        agent.state_text().contains(r#""5":{"version":1"#)
    });
    drop(running);
    let boots = agent.data.join("jobs/boots");
    assert_eq!(
        read(&boots),
        "",
        "a job received while running waits for the next boot"
    );

    // As after a reboot: the boot id the agent remembered is not the current one.
    std::fs::write(agent.data.join("jobs/.boot-id"), "another boot\n").unwrap();
    let running = agent.spawn(&mut agent.command(&[]));
    running.wait_log("edge job 5 finished: exit status 0", WAIT);
    assert_eq!(read(&boots), "booted\n");
    drop(running);

    // A restart of the agent in the same boot does not run it again.
    let running = agent.spawn(&mut agent.command(&[]));
    running.wait_log("edge jobs: 1 scheduled from the state file", WAIT);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(read(&boots), "booted\n", "{}", running.log());
}
