#!/usr/bin/env bash
# Regenerates hashes.tsv: each case here deployed by Docker Compose v2 (`up -d`, the binary in
# EDGE_AGENT_COMPOSE_V2) from /tmp/edge-agent-compose-hash/<case> (the path the unit test loads
# from, as bind sources are absolute), then the config-hash label of each service's containers.
# The image is /bin/busybox alone, tagged under the name the cases use.
#
# usage: EDGE_AGENT_COMPOSE_V2=/path/to/docker-compose tests/compose-hash/generate.sh
set -euo pipefail
cd "$(dirname "$0")"
v2=${EDGE_AGENT_COMPOSE_V2:?set EDGE_AGENT_COMPOSE_V2 to a Docker Compose v2.40.3 binary}
image=edge-agent-hash/busybox:1
if ! docker image inspect "$image" >/dev/null 2>&1; then
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    tar -C "$root" -c . | docker import --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
    rm -rf "$root"
fi
out=$(mktemp)
for file in *.yaml; do
    case=${file%.yaml}
    dir=/tmp/edge-agent-compose-hash/$case
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$file" "$dir/compose.yaml"
    [ ! -e "$case.env" ] || cp "$case.env" "$dir/"
    project=edge-agent-hash-$case
    if ! "$v2" --project-directory "$dir" -p "$project" up -d --quiet-pull >&2; then
        "$v2" --project-directory "$dir" -p "$project" down -v -t 0 >&2
        echo "$case: up failed" >&2
        exit 1
    fi
    docker ps -a --filter "label=com.docker.compose.project=$project" \
        --format "$case"'\t{{.Label "com.docker.compose.service"}}\t{{.Label "com.docker.compose.config-hash"}}' |
        sort -u >>"$out"
    "$v2" --project-directory "$dir" -p "$project" down -v -t 0 >&2
done
sort "$out" >hashes.tsv
rm "$out"
