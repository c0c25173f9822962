//! The files shipped to devices agree with the code: the env template lists every setting, the
//! first boot with it explains what to do, the Yocto crate list matches Cargo.lock, the Yocto
//! recipe and the Buildroot package carry Cargo.toml's version, the LICENSE checksums and the
//! paths of the one unit and env template in `packaging/`, and docs/building.md's table of
//! releases and their Rust agrees with Cargo.toml's rust-version and the layer's
//! LAYERSERIES_COMPAT (and README's quick start names that Rust), and README's footprint section
//! shows the last measurement (docs/footprint-idle.tsv).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edge-agent");
const TEMPLATE: &str = "packaging/edge-agent.env";
const RECIPE: &str = "yocto-layer/recipes-containers/edge-agent";
const BR_PACKAGE: &str = "buildroot/package/edge-agent";
/// Where the releases table, the rust-version and the minimum Buildroot release are stated.
const BUILDING: &str = "docs/building.md";

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `(variable, default, help)` for each setting in `edge-agent --help`, which prints them all.
fn settings() -> Vec<(String, String, String)> {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let options = help
        .split_once("Options (environment variable, default):\n")
        .unwrap();
    let lines: Vec<&str> = options.1.lines().collect();
    lines
        .chunks(2)
        .take_while(|pair| !pair[0].trim_start().starts_with("--env-file"))
        .map(|pair| {
            // "  --flag VALUE" (or "  --flag, --no-flag"), then "      VAR[, default D]: help".
            let (head, help) = pair[1].trim().split_once(": ").unwrap();
            let (var, default) = head.split_once(", default ").unwrap_or((head, ""));
            (var.to_owned(), default.to_owned(), help.to_owned())
        })
        .collect()
}

/// `md5sum`/`sha256sum` of a file of the repository.
fn digest(tool: &str, path: &str) -> String {
    let out = Command::new(tool)
        .arg(path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn env_template_lists_every_setting_with_its_help_and_default() {
    let template = read(TEMPLATE);
    let settings = settings();
    assert!(settings.len() >= 18, "{settings:?}");
    for (var, default, help) in &settings {
        // Needed at first boot: present and empty. The others: commented out, at their default.
        let line = match var.as_str() {
            "EDGE_KEY" | "EDGE_ID" => format!("{var}="),
            _ => format!("#{var}={default}"),
        };
        assert!(
            template.contains(&format!("\n# {help}\n{line}\n")),
            "{TEMPLATE} lacks\n# {help}\n{line}"
        );
    }
    for line in template
        .lines()
        .filter(|l| l.contains('=') && !l.contains(' '))
    {
        let var = line.trim_start_matches('#').split('=').next().unwrap();
        assert!(
            settings.iter().any(|(v, _, _)| v == var),
            "{TEMPLATE} names {var}, which the agent does not know"
        );
    }
}

#[test]
fn first_boot_with_the_template_says_what_to_put_where() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("edge-agent.env");
    std::fs::write(&env_file, read(TEMPLATE)).unwrap();
    let out = Command::new(BIN)
        .env_clear()
        .arg("--env-file")
        .arg(&env_file)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("EDGE_KEY is not set")
            && err.contains(&format!(
                "put it in {} as EDGE_KEY=<key>",
                env_file.display()
            )),
        "{err}"
    );
    // 78 is what the unit's RestartPreventExitStatus= names: no restart loop.
    let unit = read("packaging/edge-agent.service");
    assert!(
        unit.contains("\nRestartPreventExitStatus=64 78\n"),
        "{unit}"
    );
}

#[test]
fn env_template_defaults_are_valid_settings() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("edge-agent.env");
    let key = "aHR0cDovLzEyNy4wLjAuMTo5fDEyNy4wLjAuMTo5fGZwfDM"; // http://127.0.0.1:9|127.0.0.1:9|fp|3
    let uncommented: String = read(TEMPLATE)
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(setting) if setting.contains('=') && !setting.contains(' ') => setting,
            _ => l,
        })
        .map(|l| {
            if l == "EDGE_KEY=" {
                format!("EDGE_KEY={key}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&env_file, uncommented).unwrap();
    let out = Command::new(BIN)
        .env_clear()
        .args(["check", "--env-file"])
        .arg(&env_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("configuration: valid"), "{text}");
}

#[test]
fn yocto_crates_inc_matches_cargo_lock() {
    let out = Command::new("python3")
        .args(["yocto-layer/scripts/update-crates.py", "--check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cargo_version() -> String {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.starts_with("version = "))
        .unwrap();
    line.trim_start_matches("version = ")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn release_profile_unwinds_for_yocto_and_buildroot() {
    let manifest = read("Cargo.toml");
    let release = manifest.split("[profile.release]").nth(1).unwrap_or("");
    let release = release.split("\n[").next().unwrap();
    assert!(
        !release.contains("panic"),
        "[profile.release] must not set panic"
    );
}

#[test]
fn yocto_recipe_matches_the_crate() {
    let recipe = read(&format!("{RECIPE}/edge-agent_{}.bb", cargo_version()));
    let md5 = digest("md5sum", "LICENSE");
    assert!(
        recipe.contains(&format!("LIC_FILES_CHKSUM = \"file://LICENSE;md5={md5}\"")),
        "LIC_FILES_CHKSUM must be md5={md5}"
    );
    for file in [
        "packaging/edge-agent.service",
        "packaging/edge-agent.path",
        "packaging/edge-agent.env",
        "packaging/edge-agent.init",
    ] {
        read(file);
        assert!(recipe.contains(&format!("${{S}}/{file} ")), "{file}");
    }
    assert!(recipe.contains("SYSTEMD_SERVICE:${PN} = \"edge-agent.service edge-agent.path\""));
    assert!(recipe.contains("\nINITSCRIPT_NAME = \"edge-agent\"\n"));
    assert!(recipe.contains("CONFFILES:${PN} = \"${sysconfdir}/edge-agent/edge-agent.env\""));
    assert!(read("yocto-layer/conf/layer.conf").contains("LAYERSERIES_COMPAT_edge-agent"));
}

#[test]
fn buildroot_package_matches_the_crate() {
    let mk = read(&format!("{BR_PACKAGE}/edge-agent.mk"));
    assert!(
        mk.contains(&format!("\nEDGE_AGENT_VERSION = {}\n", cargo_version())),
        "EDGE_AGENT_VERSION must be Cargo.toml's version"
    );
    assert!(mk.contains("\nEDGE_AGENT_LICENSE_FILES = LICENSE\n"));
    assert!(mk.trim_end().ends_with("$(eval $(cargo-package))"));
    for (file, installed) in [
        (
            "packaging/edge-agent.service",
            "/usr/lib/systemd/system/edge-agent.service",
        ),
        (
            "packaging/edge-agent.path",
            "/usr/lib/systemd/system/edge-agent.path",
        ),
        ("packaging/edge-agent.env", "/etc/edge-agent/edge-agent.env"),
        ("packaging/edge-agent.init", "/etc/init.d/S70edge-agent"),
    ] {
        read(file);
        assert!(
            mk.contains(&format!("$(@D)/{file} \\\n\t\t$(TARGET_DIR){installed}\n")),
            "{file} -> {installed}"
        );
    }
    let hash = read(&format!("{BR_PACKAGE}/edge-agent.hash"));
    let sha = digest("sha256sum", "LICENSE");
    assert!(
        hash.contains(&format!("sha256  {sha}  LICENSE\n")),
        "{hash}"
    );
    let config = read(&format!("{BR_PACKAGE}/Config.in"));
    assert!(config.starts_with("config BR2_PACKAGE_EDGE_AGENT\n"));
    assert!(read("buildroot/external.desc").starts_with("name: EDGE_AGENT\n"));
    assert!(read("buildroot/Config.in")
        .contains("$BR2_EXTERNAL_EDGE_AGENT_PATH/package/edge-agent/Config.in"));
}

/// `(major, minor, patch)` of a Rust version such as "1.88" or "1.94.1".
fn rust_version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.split('.').map(|p| {
        p.parse()
            .unwrap_or_else(|e| panic!("{text:?} is not a Rust version: {e}"))
    });
    let major = parts.next().unwrap_or(0);
    (major, parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `(release, rust, builds)` of each row of the "Release | Rust | Builds edge-agent" table.
fn release_table(doc: &str) -> Vec<(String, String, String)> {
    let table = doc
        .split_once("\n| Release | Rust | Builds edge-agent |")
        .unwrap_or_else(|| {
            panic!("{BUILDING} has the table | Release | Rust | Builds edge-agent | Source ... |")
        })
        .1;
    table
        .lines()
        .skip(2) // the rest of the header line, the |---| line
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(cells.len() >= 5, "{BUILDING}: row {row:?} lacks cells");
            (cells[1].into(), cells[2].into(), cells[3].into())
        })
        .collect()
}

#[test]
fn releases_agree_with_rust_version_and_the_layer() {
    let msrv = env!("CARGO_PKG_RUST_VERSION");
    let building = read(BUILDING);
    assert!(
        building.contains(&format!("Cargo.toml's `rust-version` is **{msrv}**")),
        "{BUILDING} must say Cargo.toml's `rust-version` is **{msrv}**"
    );
    assert!(
        read("README.md").contains(&format!("Build it (Rust {msrv} or newer")),
        "README's quick start must name the minimum Rust, {msrv}"
    );
    let rows = release_table(&building);
    assert!(rows.len() >= 4, "{rows:?}");
    for (release, rust, builds) in &rows {
        let expected = if rust_version(rust) >= rust_version(msrv) {
            "yes"
        } else {
            "no"
        };
        assert_eq!(
            builds, expected,
            "{BUILDING}: {release} ships Rust {rust} and rust-version is {msrv}: its \"Builds \
             edge-agent\" cell must say {expected}"
        );
    }

    let layer = read("yocto-layer/conf/layer.conf");
    let compat = layer
        .lines()
        .find_map(|l| l.strip_prefix("LAYERSERIES_COMPAT_edge-agent = "))
        .expect("layer.conf sets LAYERSERIES_COMPAT_edge-agent")
        .trim_matches('"');
    for series in compat.split_whitespace() {
        assert!(
            rows.iter().any(|(release, _, builds)| builds == "yes"
                && release.split_whitespace().any(|word| word == series)),
            "layer.conf declares {series}, but {BUILDING}'s table has no {series} row that builds \
             rust-version {msrv}: drop the series or name the layer that brings its Rust"
        );
    }

    let minimum = building
        .split_once("The minimum Buildroot release is ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!("{BUILDING} states \"The minimum Buildroot release is <release>\"")
        });
    for (release, rust, builds) in rows.iter().filter(|(r, _, _)| r.starts_with("Buildroot ")) {
        let series = release["Buildroot ".len()..].trim_end_matches(|c: char| !c.is_ascii_digit());
        let supported = series >= minimum;
        assert_eq!(
            builds == "yes",
            supported,
            "{BUILDING}: {release} (Rust {rust}) against the stated minimum Buildroot {minimum}"
        );
    }
}

#[path = "support/footprint.rs"]
#[allow(dead_code)] // Writing the record is the bench's.
mod footprint;

#[test]
fn readme_footprint_section_shows_the_last_measurement() {
    let rows = footprint::parse(&footprint::read(footprint::RECORD));
    assert!(!rows.is_empty(), "{}: no measurement", footprint::RECORD);
    let readme = read("README.md");
    assert_eq!(
        footprint::replace_section(&readme, &footprint::section(&rows)),
        readme,
        "README.md's footprint section is not what {} holds: run `FOOTPRINT_RECORD=1 cargo footprint` (it writes both), do not edit the section by hand",
        footprint::RECORD
    );
}
