# nooelint: oelint.var.bbclassextend - a device daemon: no native or nativesdk variant
SUMMARY = "Small Portainer Edge Agent for constrained gateways"
DESCRIPTION = "Lets a Portainer Server manage the device's Docker Engine without inbound \
               ports: polls Portainer over HTTPS and opens a reverse tunnel on demand, like \
               Portainer's Go Edge Agent, in a small binary run by systemd."
HOMEPAGE = "https://github.com/example/edge-agent"
BUGTRACKER = "https://github.com/example/edge-agent/issues"
SECTION = "admin"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"
CVE_PRODUCT = "edge-agent"

# This repository. Point SRC_URI at your copy and SRCREV at the commit whose version is ${PV}.
# destsuffix=${BP} unpacks it where every declared series' default S points: ${WORKDIR}/${BP}
# on scarthgap, ${UNPACKDIR}/${BP} from whinlatter on (whose git default this is).
SRC_URI = "git://github.com/example/edge-agent.git;protocol=https;branch=main;destsuffix=${BP}"
SRCREV = "0000000000000000000000000000000000000000"

# cargo.bbclass builds the release profile (unwinding; Cargo.toml keeps panic = "abort" out of
# it), from crates fetched by SRC_URI: regenerate the list with scripts/update-crates.py.
# Cargo.toml's rust-version is the oldest Rust that builds it. scarthgap's own Rust is older:
# add meta-lts-mixins' scarthgap/rust layer there (docs/building.md's release table).
inherit cargo cargo-update-recipe-crates systemd update-rc.d
require ${BPN}-crates.inc

SYSTEMD_SERVICE:${PN} = "edge-agent.service edge-agent.path"
# sysvinit: started after docker (meta-virtualization's "defaults", 20) and stopped before it.
INITSCRIPT_NAME = "edge-agent"
INITSCRIPT_PARAMS = "defaults 80 15"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/packaging/edge-agent.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/packaging/edge-agent.path ${D}${systemd_system_unitdir}/
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -D -m 0755 ${S}/packaging/edge-agent.init ${D}${INIT_D_DIR}/edge-agent
    fi
    # Holds the Edge key once the operator fills it in: root only.
    install -d -m 0755 ${D}${sysconfdir}/edge-agent
    install -m 0600 ${S}/packaging/edge-agent.env ${D}${sysconfdir}/edge-agent/edge-agent.env
}

CONFFILES:${PN} = "${sysconfdir}/edge-agent/edge-agent.env"

# The Docker Engine it manages: every Docker recipe of meta-virtualization (docker-moby,
# docker-ce) RPROVIDES "docker"; PREFERRED_PROVIDER_virtual/docker chooses which one.
RDEPENDS:${PN} = "docker"
