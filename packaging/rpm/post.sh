# adaptive-workers %post ($1: 1 on first install, 2 or more on upgrade).
# cargo-generate-rpm has no systemd macros; this is what %systemd_post plus
# an explicit enable/start would do. Enabling works without a running
# systemd (it only makes symlinks), so an image build in a chroot still
# gets an enabled service; everything else needs a running systemd.
# The per-app drop-in directory (not in the payload: see Cargo.toml).
mkdir -p /etc/adaptive-workers/policies.d
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable adaptive-workers.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start adaptive-workers.service >/dev/null 2>&1 || :
    fi
fi
exit 0
