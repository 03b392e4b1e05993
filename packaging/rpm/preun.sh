# adaptive-workers %preun ($1: 0 on erase, 1 or more on upgrade).
# On erase: disable (symlinks only, works without a running systemd) and
# stop. On upgrade nothing happens here; %postun restarts the service.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable adaptive-workers.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop adaptive-workers.service >/dev/null 2>&1 || :
    fi
fi
exit 0
