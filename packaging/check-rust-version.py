#!/usr/bin/env python3
"""Fails when a package of Cargo.lock needs a newer Rust than Cargo.toml's rust-version (the
oldest Rust of the Yocto and Buildroot releases docs/building.md's release table says build the
recipe), or when `cargo update` could bring such a package in.

Every package of `cargo metadata --locked` is checked, for all platforms: Yocto's crate list and
Buildroot's vendoring fetch them all, and cargo refuses to build a package whose rust-version
is newer than the compiler. A package needs its own rust-version or, declaring none, the first
Rust of its edition. Clippy's incompatible_msrv checks the project's code (.ci/run).

usage: packaging/check-rust-version.py        (from any folder; needs cargo)
"""
import json
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".cargo/config.toml"
# The first Rust release of each edition.
EDITION_RUST = {"2015": "1.0", "2018": "1.31", "2021": "1.56", "2024": "1.85"}


def version(text):
    """"1.88" and "1.88.0" as (1, 88, 0)."""
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def needs(package):
    """The Rust a package needs and why."""
    edition = EDITION_RUST[package["edition"]]
    declared = package.get("rust_version")
    if declared and version(declared) >= version(edition):
        return declared, "its rust-version"
    return edition, f"edition {package['edition']}"


def dependents(metadata, package_id):
    """`name version` of the packages that depend on package_id, "(dev)" where only tests do."""
    names = {p["id"]: f"{p['name']} {p['version']}" for p in metadata["packages"]}
    found = []
    for node in metadata["resolve"]["nodes"]:
        for dep in node["deps"]:
            if dep["pkg"] == package_id:
                kinds = {k["kind"] for k in dep["dep_kinds"]}
                found.append(names[node["id"]] + (" (dev)" if kinds == {"dev"} else ""))
    return sorted(found)


def main():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--quiet"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if out.returncode != 0:
        print(f"cargo metadata --locked failed:\n{out.stderr}", file=sys.stderr)
        return 1
    metadata = json.loads(out.stdout)
    root = next(p for p in metadata["packages"] if p["id"] == metadata["resolve"]["root"])
    msrv = root.get("rust_version")
    if not msrv:
        print(f"{ROOT / 'Cargo.toml'}: [package] has no rust-version", file=sys.stderr)
        return 1

    failures = []
    resolver = tomllib.loads(CONFIG.read_text()).get("resolver", {})
    if resolver.get("incompatible-rust-versions") != "fallback":
        failures.append(
            f'{CONFIG}: [resolver] incompatible-rust-versions must be "fallback", or '
            f"`cargo update` may lock versions that need a newer Rust than {msrv}"
        )
    packages = sorted(
        (p for p in metadata["packages"] if p["id"] != root["id"]),
        key=lambda p: version(needs(p)[0]),
        reverse=True,
    )
    for p in packages:
        rust, why = needs(p)
        if version(rust) > version(msrv):
            by = ", ".join(dependents(metadata, p["id"])) or "Cargo.toml"
            failures.append(
                f"{p['name']} {p['version']} needs Rust {rust} ({why}), newer than Cargo.toml's "
                f"rust-version {msrv}; required by {by}. Lock an older version "
                f"(cargo update -p {p['name']}@{p['version']} --precise <version>) or replace it; "
                f"raise rust-version only if every release in docs/building.md's release table "
                f"ships that Rust"
            )
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1

    top = [p for p in packages if version(needs(p)[0]) == version(needs(packages[0])[0])]
    undeclared = sum(1 for p in packages if needs(p)[1].startswith("edition"))
    print(
        f"rust-version {msrv}: all {len(packages)} locked dependencies build with it (newest needed: "
        f"{needs(top[0])[0]}, by {', '.join(p['name'] + ' ' + p['version'] for p in top)}; "
        f"{undeclared} declare no rust-version and are judged by their edition)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
