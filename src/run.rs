//! `edge-agent run`: startup (the key setup page when asked for and no key is known, identity
//! and state), the poll loop in its own thread feeding the tunnel and the edge stacks, and an
//! orderly stop on SIGTERM/SIGINT within two seconds with the state saved.

use crate::api::signature::Verifier;
use crate::api::{self, Api};
use crate::config::{Config, EnvFileChoice, ProcessEnvironment, SetupPage};
use crate::docker;
use crate::identity::{self, Identity};
use crate::jobs::{self, Jobs, Uploader};
use crate::poller::{Consumer, Poller};
use crate::portainer::Client;
use crate::setup_page::{self, Outcome};
use crate::stacks::{self, Stacks};
use crate::state::{Persisted, State, Store};
use crate::system::signals::Termination;
use crate::system::systemd::Notifier;
use crate::tunnel::{self, Settings, Target, Tunnel};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How long a stop waits for the poll loop to finish its current request.
const STOP_GRACE: Duration = Duration::from_millis(1500);

pub fn run(config: Config) -> ExitCode {
    let termination = match Termination::block() {
        Ok(t) => t,
        Err(e) => return fail(&format!("cannot set up signal handling: {e}")),
    };
    // Until the poll loop runs, every failure is one a restart cannot fix: a configuration error.
    let (mut store, mut saved) = match Store::open(&config.data_path) {
        Ok(opened) => opened,
        Err(e) => return config_error(&e.to_string()),
    };
    let notifier = Arc::new(Notifier::from_env());
    if let Some(page) = config.setup_page {
        if config.edge_key.is_none() && saved.edge_key.is_none() {
            let waiting = (&termination, notifier.as_ref());
            match key_from_setup_page(&config, page, waiting, &mut store, &saved) {
                Ok(text) => saved.edge_key = Some(text),
                Err(code) => return code,
            }
        }
    }
    let (identity, state) = match identity::resolve(&config, &saved) {
        Ok(resolved) => resolved,
        Err(e) => return config_error(&e.to_string()),
    };
    let client = match Client::new(&config, &identity.key.portainer_url, &identity.edge_id) {
        Ok(client) => client,
        Err(e) => return config_error(&e.to_string()),
    };
    // The edge stacks have a clone of their own: a slow payload never delays a poll.
    let stacks_client = client.clone();
    let tunnel_target = match config
        .tunnel
        .then(|| Target::parse(&identity.key.tunnel_addr))
    {
        None => None,
        Some(Ok(target)) => Some(target),
        Some(Err(e)) => return config_error(&format!("EDGE_KEY: {e}")),
    };
    if let Err(e) = store.save(&state) {
        return fail(&e.to_string());
    }
    log::info!(
        "edge-agent {} starting: Edge ID {}, Portainer {}, state {}",
        env!("CARGO_PKG_VERSION"),
        identity.edge_id,
        identity.key.portainer_url,
        store.path().display()
    );
    log_docker(&config);
    if config.insecure_poll {
        log::warn!("EDGE_INSECURE_POLL is on: the Portainer server certificate is not verified");
    }
    let persisted = Arc::new(Persisted::new(store, state));
    let mut consumers: Vec<Box<dyn Consumer>> = Vec::new();
    if let Some(target) = tunnel_target {
        consumers.push(Box::new(tunnel_for(&config, &identity, target, &persisted)));
    }
    let settings = stacks::Settings {
        data_path: config.data_path.clone(),
        docker_socket: config.docker_socket.clone(),
        edge_id: identity.edge_id.clone(),
    };
    match Stacks::start(settings, stacks_client, persisted.clone()) {
        Ok(stacks) => consumers.push(Box::new(stacks)),
        Err(e) => return fail(&format!("cannot start the edge stack threads: {e}")),
    }
    let jobs = match jobs_for(&config, &identity, client.clone(), &persisted) {
        Ok((jobs, answers)) => {
            consumers.push(Box::new(answers));
            jobs
        }
        Err(e) => return fail(&e),
    };
    let poller = Poller::new(
        client,
        identity,
        config.meta.clone(),
        persisted.clone(),
        consumers,
        config.tunnel,
    );

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let poll_notifier = notifier.clone();
    let spawned = std::thread::Builder::new()
        .name("poll".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            poller.run(&stop_rx, &poll_notifier);
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        return fail(&format!("cannot start the poll thread: {e}"));
    }
    notifier.ready();

    let signal = termination.wait();
    notifier.stopping();
    match signal {
        Ok(signal) => log::info!("{signal} received, stopping"),
        Err(e) => log::error!("waiting for signals failed ({e}), stopping"),
    }
    drop(stop_tx);
    if done_rx.recv_timeout(STOP_GRACE).is_err() {
        log::warn!("a Portainer request is still in flight; stopping without waiting for it");
    }
    jobs.stop();
    let _frozen = persisted.freeze();
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// The Edge key entered on the setup page, saved in the state file before the page says so; or
/// how `run` ends when none comes (a stop signal, or the page's time limit).
fn key_from_setup_page(
    config: &Config,
    page: SetupPage,
    (termination, notifier): (&Termination, &Notifier),
    store: &mut Store,
    saved: &State,
) -> Result<String, ExitCode> {
    let limit = setup_page::limit();
    let save = |text: &str| {
        let mut with_key = saved.clone();
        with_key.edge_key = Some(text.to_owned());
        store.save(&with_key).map_err(|e| e.to_string())
    };
    match setup_page::wait_for_key(page.addr, limit, (termination, notifier), save) {
        Ok(Outcome::Key(text)) => Ok(text),
        Ok(Outcome::Stopped(signal)) => {
            log::info!("{signal} received while waiting on the setup page, stopped");
            Err(ExitCode::SUCCESS)
        }
        Ok(Outcome::TimedOut) => Err(config_error(&format!(
            "no Edge key was entered on the setup page within {}, so it is closed: put EDGE_KEY=<key> in {}, or restart the agent to open the page again",
            crate::config::duration::display(limit),
            config.env_file.display()
        ))),
        Err(e) => Err(config_error(&e.to_string())),
    }
}

/// The tunnel as the Edge key and the settings describe it, serving the agent API.
fn tunnel_for(
    config: &Config,
    identity: &Identity,
    target: Target,
    persisted: &Arc<Persisted>,
) -> Tunnel {
    let proxy = crate::portainer::proxy::for_tunnel(&config.proxies, &target.host, target.port);
    let settings = Settings {
        proxy: proxy.map(str::to_owned),
        target,
        fingerprint: identity.key.fingerprint.clone(),
        edge_id: identity.edge_id.clone(),
        ca_file: config.tls.ca.clone(),
        inactivity: config.inactivity_timeout,
        keepalive: tunnel::KEEPALIVE,
    };
    Tunnel::new(settings, api_handler(config, identity, persisted))
}

/// The agent API each tunnel channel is handed to.
fn api_handler(
    config: &Config,
    identity: &Identity,
    persisted: &Arc<Persisted>,
) -> tunnel::Handler {
    let verifier = Verifier::new(config.agent_secret.as_deref(), persisted.clone());
    let api = Api::new(verifier, config, identity.key.clone(), persisted.clone());
    api::handler(Arc::new(api))
}

/// The agent API as `run` serves it, for the env file `env_file` (and the process
/// environment), without polling or a tunnel: `benches/upload.rs` serves it behind the real
/// chisel client, the reference the tunnel is measured against.
pub fn api_alone(env_file: PathBuf) -> Result<tunnel::Handler, String> {
    let config = Config::load(EnvFileChoice::Named(env_file), &ProcessEnvironment, &[]).map_err(
        |errors| {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            errors.join("; ")
        },
    )?;
    let (store, saved) = Store::open(&config.data_path).map_err(|e| e.to_string())?;
    let (identity, state) = identity::resolve(&config, &saved).map_err(|e| e.to_string())?;
    let persisted = Arc::new(Persisted::new(store, state));
    Ok(api_handler(&config, &identity, &persisted))
}

/// Edge jobs, with their log uploads on a clone of the client (the poll never waits on them).
fn jobs_for(
    config: &Config,
    identity: &Identity,
    client: Client,
    persisted: &Arc<Persisted>,
) -> Result<(Jobs, jobs::Answers), String> {
    let settings = jobs::Settings::new(&config.data_path, &identity.edge_id);
    let dir = settings.dir.clone();
    let uploader = Uploader::start(client, dir.clone())
        .map_err(|e| format!("cannot start the edge job log thread: {e}"))?;
    let request_log = Box::new(move |endpoint, job| uploader.request(endpoint, job));
    Jobs::start(settings, persisted.clone(), request_log, jobs::SystemClock)
        .map_err(|e| format!("cannot start edge jobs in {}: {e}", dir.display()))
}

fn config_error(message: &str) -> ExitCode {
    log::error!("{message}");
    ExitCode::from(crate::EXIT_CONFIG)
}

fn fail(message: &str) -> ExitCode {
    log::error!("{message}");
    ExitCode::FAILURE
}

/// Says once at start whether Docker answers, with `check`'s advice when it does not: stacks,
/// jobs and the Docker proxy need it, and otherwise fail one by one later.
fn log_docker(config: &Config) {
    let socket = config.docker_socket.display();
    match docker::Client::connect(&config.docker_socket, docker::Limits::default())
        .and_then(|client| client.version())
    {
        Ok(version) => log::info!(
            "Docker: {socket} answers, Docker Engine {} (API {})",
            version.version,
            version.api_version
        ),
        Err(e) => log::warn!(
            "Docker: {e}. Edge stacks, edge jobs and Portainer's Docker views fail until it answers; `edge-agent check` shows the same"
        ),
    }
}
