# adaptive-workers %postun ($1: 0 on erase, 1 or more on upgrade).
# Forget the removed unit file, and after an upgrade restart the service
# if it was running, so the new binary takes over (%systemd_postun_with_restart).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart adaptive-workers.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ]; then
    # Only if empty: a modified config is kept as .rpmsave, and an admin's
    # policies stay where they are.
    rmdir /etc/adaptive-workers/policies.d /etc/adaptive-workers 2>/dev/null || :
fi
exit 0
