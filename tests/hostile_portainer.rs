//! A hostile or broken Portainer Server against the real binary: oversized, endless and
//! trickled answers, garbage, nesting and invalid UTF-8, huge lists, bad stack payloads and job
//! scripts, redirect loops, a certificate swapped mid-run and unusable check-in intervals. Each
//! test asserts what the device's owner would see: one WARN or ERROR line naming the route and
//! the limit (not one per poll), a peak RSS far below the hostile size, nothing written outside
//! `DATA_PATH` or for a refused payload, and the next healthy answer taking effect.
//!
//! Peak RSS figures are printed (`cargo test --test hostile_portainer -- --nocapture`).

mod support;

use std::time::{Duration, Instant};
use support::agent::{proc_kib, Agent, Running};
use support::{EdgeJob, FakePortainer, Fault, Transport};

const WAIT: Duration = Duration::from_secs(15);
const ENDPOINT: i64 = 1;
/// The agent's peak RSS under every hostile answer; the answers are 100 MB to 1 GB.
const PEAK_RSS_KIB: u64 = 24 * 1024;
/// What the fake may have written of a cut answer: the agent's limit plus socket buffers.
const STREAMED_AT_MOST: u64 = 32 << 20;

fn server(transport: Transport) -> FakePortainer {
    let server = FakePortainer::start(transport);
    server.add_endpoint(ENDPOINT, None);
    server.set_checkin(0.05);
    server
}

/// An agent polling `server` (endpoint 1), with a Docker socket that does not exist (nothing
/// here needs the engine) and `env` lines added.
fn start(server: &FakePortainer, env: &str) -> (Agent, Running) {
    let agent = Agent::new();
    agent.write_env(&format!(
        "EDGE_KEY={}\nEDGE_ID=hostile-device\nEDGE_TUNNEL=false\nDOCKER_HOST=unix://{}\n{env}",
        agent.key(server, ENDPOINT),
        agent.dir.path().join("no-docker.sock").display()
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

/// Waits for `n` more polls than now.
fn wait_polls(server: &FakePortainer, running: &Running, n: usize) {
    let target = server.poll_count() + n;
    wait_for(&format!("{n} more polls"), running, || {
        server.poll_count() >= target
    });
}

/// The WARN and ERROR lines of the log holding every one of `needles`.
fn alarms(running: &Running, needles: &[&str]) -> Vec<String> {
    running
        .log()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Exactly one WARN/ERROR line holds `needles`, however often the fault was met.
fn one_alarm(running: &Running, needles: &[&str]) {
    let lines = alarms(running, needles);
    assert_eq!(
        lines.len(),
        1,
        "one line with {needles:?} expected:\n{}",
        running.log()
    );
}

/// The agent's peak RSS stays under the bound; printed for the record.
fn peak_rss(running: &Running, case: &str) -> u64 {
    let kib = proc_kib(running.pid(), "status", "VmHWM");
    println!("{case}: peak RSS {kib} KiB");
    assert!(kib > 0, "no VmHWM for the agent");
    assert!(
        kib < PEAK_RSS_KIB,
        "{case}: peak RSS {kib} KiB, bound {PEAK_RSS_KIB} KiB\n{}",
        running.log()
    );
    kib
}

/// Continued service: with the fault cleared, the next answer's new edge job is scheduled and
/// its script written.
fn serves_again(server: &FakePortainer, agent: &Agent, running: &Running) {
    server.set_fault(None);
    server.set_jobs(
        ENDPOINT,
        &[EdgeJob {
            id: 77,
            cron: "@hourly".into(),
            script: "echo recovered\n".into(),
            version: 1,
            collect_logs: false,
        }],
    );
    let script = agent.data.join("jobs/77/script");
    wait_for("the next healthy answer schedules job 77", running, || {
        std::fs::read_to_string(&script).is_ok_and(|s| s == "echo recovered\n")
    });
    running.wait_log("edge job 77 v1 scheduled", WAIT);
}

/// A blank-filled answer of `size` bytes.
fn huge(size: u64) -> Fault {
    Fault::Huge {
        prefix: Vec::new(),
        fill: b' ',
        size,
    }
}

/// A poll answer that fails, repeated: one line naming the route and `limit`, the fake's
/// streaming cut short, memory bounded, and service once the fault is gone.
fn poll_fault(fault: Fault, case: &str, needles: &[&str]) {
    let server = server(Transport::Plain);
    let (agent, running) = start(&server, "");
    wait_polls(&server, &running, 1);
    server.set_fault_on("/edge/status", fault);
    wait_polls(&server, &running, 3);
    let mut needles = needles.to_vec();
    needles.push("/api/endpoints/1/edge/status");
    one_alarm(&running, &needles);
    println!("{case}: {} bytes streamed", server.streamed());
    assert!(
        server.streamed() < STREAMED_AT_MOST,
        "{case}: the agent read {} bytes",
        server.streamed()
    );
    peak_rss(&running, case);
    serves_again(&server, &agent, &running);
}

#[test]
fn a_1_gb_poll_answer_is_cut_at_the_limit() {
    poll_fault(huge(1 << 30), "1 GB poll answer", &["1024 KiB"]);
}

#[test]
fn an_endless_chunked_poll_answer_is_cut_at_the_limit() {
    poll_fault(Fault::Endless, "endless chunked poll answer", &["1024 KiB"]);
}

#[test]
fn garbage_json_is_a_clear_failure() {
    let garbage = b"{\"status\":\"IDLE\",\"checkin\":5,,]]\x00\x01 {{{".to_vec();
    poll_fault(
        Fault::Answer(garbage),
        "garbage JSON",
        &["not with a poll response"],
    );
}

#[test]
fn deeply_nested_json_is_refused_without_recursing() {
    let mut nested = b"{\"status\":\"IDLE\",\"extra\":".to_vec();
    nested.extend(std::iter::repeat_n(b'[', 500_000));
    poll_fault(
        Fault::Answer(nested),
        "500,000 nested arrays",
        &["not with a poll response"],
    );
}

#[test]
fn invalid_utf8_is_a_clear_failure() {
    let body = b"{\"status\":\"ID\xff\xfeLE\",\"checkin\":1}".to_vec();
    poll_fault(
        Fault::Answer(body),
        "invalid UTF-8",
        &["not with a poll response"],
    );
}

#[test]
fn a_job_script_of_100_mb_is_refused_at_the_poll_limit() {
    let prefix = br#"{"status":"IDLE","checkin":1,"schedules":[{"Id":1,"CronExpression":"@hourly","Version":1,"Script":""#;
    let fault = Fault::Huge {
        prefix: prefix.to_vec(),
        fill: b'A',
        size: 134 << 20, // 100 MiB in base64
    };
    poll_fault(fault, "100 MB job script", &["1024 KiB"]);
}

/// `{"ID":n,"Version":1}` as Portainer spells it: 100,000 of them are over 2 MB.
fn stacks_json(n: usize) -> Vec<u8> {
    let list: Vec<String> = (1..=n)
        .map(|i| format!(r#"{{"ID":{i},"Version":1}}"#))
        .collect();
    format!(
        r#"{{"status":"IDLE","checkin":0.05,"stacks":[{}]}}"#,
        list.join(",")
    )
    .into_bytes()
}

#[test]
fn a_poll_listing_100000_stacks_or_jobs_is_refused_at_the_poll_limit() {
    poll_fault(
        Fault::Answer(stacks_json(100_000)),
        "100,000 stacks",
        &["1024 KiB"],
    );
    let jobs: Vec<String> = (1..=100_000)
        .map(|i| {
            format!(r#"{{"Id":{i},"CronExpression":"@hourly","Script":"dHJ1ZQ","Version":1}}"#)
        })
        .collect();
    let body = format!(r#"{{"status":"IDLE","schedules":[{}]}}"#, jobs.join(","));
    poll_fault(
        Fault::Answer(body.into_bytes()),
        "100,000 jobs",
        &["1024 KiB"],
    );
}

/// Lists as short as JSON allows fit 60,000 entries under the poll limit: the agent's own
/// count limits apply, with one line each however many polls repeat them.
#[test]
fn sixty_thousand_stacks_and_jobs_within_the_body_limit_hit_the_count_limits() {
    let server = server(Transport::Plain);
    let (agent, running) = start(&server, "");
    wait_polls(&server, &running, 1);
    let stacks: Vec<String> = (1..=60_000).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
    let body = format!(r#"{{"checkin":0.05,"stacks":[{}]}}"#, stacks.join(","));
    assert!(body.len() < 1 << 20);
    server.set_fault_on("/edge/status", Fault::Answer(body.into_bytes()));
    wait_polls(&server, &running, 5);
    one_alarm(&running, &["edge stacks", "60000", "64"]);

    let jobs: Vec<String> = (1..=60_000).map(|i| format!(r#"{{"Id":{i}}}"#)).collect();
    let body = format!(r#"{{"checkin":0.05,"schedules":[{}]}}"#, jobs.join(","));
    assert!(body.len() < 1 << 20);
    server.set_fault_on("/edge/status", Fault::Answer(body.into_bytes()));
    wait_polls(&server, &running, 5);
    one_alarm(&running, &["edge jobs", "60000", "64"]);
    let folders = std::fs::read_dir(agent.data.join("jobs"))
        .map(|d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
                .count()
        })
        .unwrap_or(0);
    assert!(folders <= 64, "{folders} job folders");
    let longest = running.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    peak_rss(&running, "60,000 stacks and jobs");
    serves_again(&server, &agent, &running);
}

#[test]
fn slowloris_is_ended_by_the_request_timeout() {
    let server = server(Transport::Plain);
    let (agent, running) = start(&server, "");
    wait_polls(&server, &running, 1);
    server.set_fault_on("/edge/status", Fault::Trickle);
    let started = Instant::now();
    let deadline = Duration::from_secs(40);
    while alarms(&running, &["/api/endpoints/1/edge/status", "30 s"]).is_empty() {
        assert!(
            started.elapsed() < deadline,
            "1 byte/s not ended:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("1 byte/s ended after {:?}", started.elapsed());
    one_alarm(&running, &["/api/endpoints/1/edge/status", "30 s"]);
    peak_rss(&running, "1 byte/s");
    serves_again(&server, &agent, &running);
}

#[test]
fn a_redirect_loop_is_cut_after_3_redirects() {
    let server = server(Transport::Plain);
    // DEBUG: each failed poll after the first leaves a "poll failed again" line.
    let (agent, running) = start(&server, "LOG_LEVEL=DEBUG\n");
    wait_polls(&server, &running, 1);
    let before = server.requests().len();
    server.set_fault_on("/edge/status", Fault::RedirectLoop);
    wait_polls(&server, &running, 12);
    one_alarm(&running, &["/api/endpoints/1/edge/status", "3 redirects"]);
    peak_rss(&running, "redirect loop");
    serves_again(&server, &agent, &running);
    // Each failed poll followed 3 redirects (4 requests); one more may have been cut short by
    // the fault's end.
    let redirected = server.requests()[before..]
        .iter()
        .filter(|r| r.status == 302)
        .count();
    let failed = 1 + running.log().matches("poll failed again").count();
    assert!(
        (4 * failed..=4 * failed + 3).contains(&redirected),
        "{redirected} redirects for {failed} failed polls"
    );
}

#[test]
fn a_certificate_from_another_ca_mid_run_is_refused_then_the_right_one_accepted() {
    let server = server(Transport::TlsCaSigned);
    let ca = server.ca_pem_path().unwrap();
    let (agent, running) = start(&server, &format!("MTLS_SSL_CA={}\n", ca.display()));
    wait_polls(&server, &running, 2);
    server.swap_certificate();
    let before = server.poll_count();
    wait_for("the swapped certificate is refused", &running, || {
        !alarms(&running, &["invalid peer certificate"]).is_empty()
    });
    // Let the refusal repeat: still one line. The other CA has the same name as the trusted
    // one (a CA made anew): webpki finds a bad signature.
    std::thread::sleep(Duration::from_secs(1));
    one_alarm(
        &running,
        &[
            "/api/endpoints/1/edge/status",
            "BadSignature",
            "MTLS_SSL_CA=<",
        ],
    );
    assert_eq!(server.poll_count(), before, "no poll got through");
    peak_rss(&running, "certificate of another CA");
    server.restore_certificate();
    running.wait_log("Portainer answers again", WAIT);
    serves_again(&server, &agent, &running);
}

#[test]
fn checkin_0_and_negative_keep_the_interval_with_one_warning() {
    let server = server(Transport::Plain);
    let (agent, running) = start(&server, "");
    running.wait_log("check-in interval is now 50ms", WAIT);
    let unusable = [
        "checkin is not a positive number of seconds",
        "keeping 50ms",
    ];
    for (n, checkin) in [0.0, -3.0].into_iter().enumerate() {
        server.set_checkin(checkin);
        let from = server.poll_count();
        std::thread::sleep(Duration::from_secs(1));
        let polls = server.poll_count() - from;
        // 50 ms kept: about 20 polls; a spin would be thousands, a stop none.
        assert!(
            (2..200).contains(&polls),
            "checkin {checkin}: {polls} polls in 1 s"
        );
        assert_eq!(
            alarms(&running, &unusable).len(),
            n + 1,
            "{}",
            running.log()
        );
        // A usable checkin in between: the next bad one is a new event.
        server.set_checkin(0.05);
        wait_polls(&server, &running, 2);
    }
    peak_rss(&running, "checkin 0 and negative");
    serves_again(&server, &agent, &running);
}

#[test]
fn checkin_nan_is_a_clear_failure() {
    let server = server(Transport::Plain);
    let (agent, running) = start(&server, "");
    wait_polls(&server, &running, 1);
    // What JSON cannot spell: `NaN` as a bare word, then as a string.
    server.set_checkin(f64::NAN);
    wait_polls(&server, &running, 3);
    one_alarm(&running, &["/api/endpoints/1/edge/status", "poll response"]);
    server.set_checkin(0.05);
    server.set_fault_on(
        "/edge/status",
        Fault::Answer(br#"{"status":"IDLE","checkin":"NaN"}"#.to_vec()),
    );
    wait_polls(&server, &running, 3);
    one_alarm(
        &running,
        &["/api/endpoints/1/edge/status", "invalid type: string"],
    );
    peak_rss(&running, "checkin NaN");
    serves_again(&server, &agent, &running);
}

#[test]
fn checkin_1e308_is_clamped_to_a_day_and_the_agent_stays_responsive() {
    let server = server(Transport::Plain);
    let (_agent, mut running) = start(&server, "");
    wait_polls(&server, &running, 1);
    server.set_checkin(1e308);
    running.wait_log("check-in interval is now 24h0m0s", WAIT);
    one_alarm(&running, &["checkin is over 24h0m0s: clamped to 24h0m0s"]);
    let polls = server.poll_count();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.poll_count(),
        polls,
        "no poll before a day has passed"
    );
    peak_rss(&running, "healthy polls only (checkin 1e308)");
    // Still in service: it stops at once when told.
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let status = running.wait_exit(Duration::from_secs(3));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", running.log());
}

/// Edge stack payloads: one stack, the fake's payload route misbehaving or its entries hostile.
fn stack_server() -> FakePortainer {
    let server = server(Transport::Plain);
    server.set_checkin(0.1);
    server
}

const COMPOSE: &str = "services:\n  web:\n    image: busybox\n";

/// Waits for stack `id`'s error report (status 2) and returns its error text.
fn stack_error(server: &FakePortainer, running: &Running, id: i64) -> String {
    wait_for("a status 2 report", running, || {
        server.stack_reports(id).iter().any(|r| r.status == 2)
    });
    server
        .stack_reports(id)
        .into_iter()
        .find(|r| r.status == 2)
        .map(|r| r.error)
        .unwrap_or_default()
}

/// Continued service for stacks: a valid new version is fetched and its folder written.
fn deploys_again(server: &FakePortainer, agent: &Agent, running: &Running, id: i64) {
    server.set_fault(None);
    server.put_edge_stack(id, "fine", &[("docker-compose.yml", COMPOSE)]);
    server.set_stacks(ENDPOINT, &[(id, 2)]);
    let compose = agent.data.join(format!("stacks/{id}/docker-compose.yml"));
    wait_for("version 2 written", running, || {
        std::fs::read_to_string(&compose).is_ok_and(|c| c == COMPOSE)
    });
}

fn nothing_on_disk(agent: &Agent, id: i64) {
    let stacks = agent.data.join("stacks");
    let left: Vec<_> = std::fs::read_dir(&stacks)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(&id.to_string()))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", stacks.display());
}

#[test]
fn a_500_mb_stack_payload_is_refused_at_2_mib_without_a_trace() {
    let server = stack_server();
    server.put_edge_stack(5, "big", &[("docker-compose.yml", COMPOSE)]);
    server.set_fault_on("/edge/stacks/5", huge(500 << 20));
    server.set_stacks(ENDPOINT, &[(5, 1)]);
    let (agent, running) = start(&server, "");
    let error = stack_error(&server, &running, 5);
    assert!(
        error.contains("/api/endpoints/1/edge/stacks/5") && error.contains("2048 KiB"),
        "{error}"
    );
    wait_polls(&server, &running, 5);
    one_alarm(&running, &["edge stack 5", "2048 KiB"]);
    println!("500 MB stack payload: {} bytes streamed", server.streamed());
    assert!(
        server.streamed() < STREAMED_AT_MOST,
        "read {} bytes",
        server.streamed()
    );
    nothing_on_disk(&agent, 5);
    peak_rss(&running, "500 MB stack payload");
    deploys_again(&server, &agent, &running, 5);
}

#[test]
fn stack_file_names_outside_the_folder_are_refused_and_nothing_is_written() {
    let server = stack_server();
    let (agent, running) = start(&server, "");
    let outside = agent.dir.path();
    let absolute = outside.join("absolute-escape");
    let cases = [
        ("../../etc/passwd".to_owned(), "climbs out"),
        ("../../../escaped".to_owned(), "climbs out"),
        (absolute.display().to_string(), "absolute"),
    ];
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    for (n, (name, why)) in cases.iter().enumerate() {
        let id = 10 + n as i64;
        server.put_edge_stack_entries(
            id,
            &format!("evil{id}"),
            "docker-compose.yml",
            vec![
                (
                    "docker-compose.yml".into(),
                    COMPOSE.as_bytes().to_vec(),
                    true,
                    0o644,
                ),
                (
                    name.clone(),
                    b"root::0:0::/:/bin/sh\n".to_vec(),
                    true,
                    0o644,
                ),
            ],
        );
        server.set_stacks(ENDPOINT, &[(id, 1)]);
        let error = stack_error(&server, &running, id);
        assert!(
            error.contains(name.as_str()) && error.contains(why),
            "{error}"
        );
        one_alarm(&running, &[&format!("edge stack {id}"), why]);
        nothing_on_disk(&agent, id);
    }
    assert!(!outside.join("escaped").exists() && !absolute.exists());
    assert!(!agent.data.join("etc").exists());
    assert_eq!(std::fs::read("/etc/passwd").unwrap_or_default(), passwd);
    peak_rss(&running, "names outside the folder");
    deploys_again(&server, &agent, &running, 12);
}

/// Go's `os.ModeSymlink` in `Permissions` does not make a link (the Go agent writes a regular
/// file too), and a link a container left in the stack folder is not written through.
#[test]
fn symlink_entries_and_links_in_the_folder_lead_nowhere() {
    let server = stack_server();
    let (agent, running) = start(&server, "");
    let outside = agent.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    const MODE_SYMLINK: u32 = 1 << 27;
    server.put_edge_stack_entries(
        20,
        "links",
        "docker-compose.yml",
        vec![
            (
                "docker-compose.yml".into(),
                COMPOSE.as_bytes().to_vec(),
                true,
                0o644,
            ),
            (
                "link".into(),
                outside.display().to_string().into_bytes(),
                true,
                MODE_SYMLINK | 0o777,
            ),
        ],
    );
    server.set_stacks(ENDPOINT, &[(20, 1)]);
    let folder = agent.data.join("stacks/20");
    wait_for("version 1 written", &running, || {
        folder.join("docker-compose.yml").is_file()
    });
    let link = std::fs::symlink_metadata(folder.join("link")).unwrap();
    assert!(link.is_file(), "a regular file: {link:?}");

    // What a container with the folder bound could leave: `conf` leading out.
    std::os::unix::fs::symlink(&outside, folder.join("conf")).unwrap();
    server.put_edge_stack_entries(
        20,
        "links",
        "docker-compose.yml",
        vec![
            (
                "docker-compose.yml".into(),
                COMPOSE.as_bytes().to_vec(),
                true,
                0o644,
            ),
            ("conf/app.ini".into(), b"a=1\n".to_vec(), true, 0o644),
        ],
    );
    server.set_stacks(ENDPOINT, &[(20, 2)]);
    let ini = folder.join("conf/app.ini");
    wait_for("version 2 written", &running, || ini.is_file());
    assert!(std::fs::symlink_metadata(folder.join("conf"))
        .unwrap()
        .is_dir());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
    peak_rss(&running, "symlinks");
}
