#!/bin/sh
# The VM tests' control channel inside the guest (tests/support/vm.rs): reads lines
# "<id> <shell command>" from the virtio-serial port named "control", runs each, and answers its
# output followed by a line "@@vm-control-rc=<id>:<exit code>@@". Runs under dash and BusyBox sh.
port=
while [ -z "$port" ]; do
    for d in /sys/class/virtio-ports/*; do
        [ "$(cat "$d/name" 2>/dev/null)" = control ] && port=/dev/${d##*/}
    done
    [ -n "$port" ] || sleep 0.2
done
while :; do
    # The port reads end of file while the host side is not connected: open it again.
    exec 3<>"$port" || { sleep 0.2; continue; }
    while IFS= read -r line <&3; do
        id=${line%% *}
        # Into a file, not $(...): that would wait for every background process the command
        # started (a daemon's logger, say) to close the output.
        (cd / && sh -c "${line#* }") </dev/null >/run/vm-control.out 2>&1
        rc=$?
        cat /run/vm-control.out >&3
        printf '\n@@vm-control-rc=%s:%d@@\n' "$id" "$rc" >&3
    done
    exec 3>&-
    sleep 0.2
done
