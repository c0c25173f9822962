################################################################################
#
# edge-agent
#
################################################################################

# A git tag or commit of this repository (a release tag is Cargo.toml's
# version), and where the repository is.
EDGE_AGENT_VERSION = 0.1.0
EDGE_AGENT_SITE = https://github.com/example/edge-agent.git
EDGE_AGENT_SITE_METHOD = git
EDGE_AGENT_LICENSE = Apache-2.0
EDGE_AGENT_LICENSE_FILES = LICENSE
# The archive (source and vendored crates) depends on the site and version
# chosen above: once they are fixed, add its sha256 to edge-agent.hash and
# delete this line.
BR_NO_CHECK_HASH_FOR += $(EDGE_AGENT_SOURCE)

# cargo-package builds the release profile (unwinding) and installs
# /usr/bin/edge-agent. It needs Buildroot 2026.02 or later: host-rust 1.88,
# Cargo.toml's rust-version. Its download step vendors the crates (cargo
# vendor --locked, replacing .cargo/config.toml) and it builds --offline
# --locked: no EDGE_AGENT_CARGO_ENV is needed.

define EDGE_AGENT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/packaging/edge-agent.service \
		$(TARGET_DIR)/usr/lib/systemd/system/edge-agent.service
	$(INSTALL) -D -m 0644 $(@D)/packaging/edge-agent.path \
		$(TARGET_DIR)/usr/lib/systemd/system/edge-agent.path
endef

# BusyBox init or sysvinit: started after S60dockerd, restarted by its own supervising loop
# (the script says why not an inittab respawn line).
define EDGE_AGENT_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/packaging/edge-agent.init \
		$(TARGET_DIR)/etc/init.d/S70edge-agent
endef

# The first-boot env file. It holds the Edge key once filled in, so it is
# for root only. A rootfs overlay may replace it.
define EDGE_AGENT_INSTALL_ENV_FILE
	$(INSTALL) -D -m 0600 $(@D)/packaging/edge-agent.env \
		$(TARGET_DIR)/etc/edge-agent/edge-agent.env
endef
EDGE_AGENT_POST_INSTALL_TARGET_HOOKS += EDGE_AGENT_INSTALL_ENV_FILE

$(eval $(cargo-package))
