#!/usr/bin/env python3
"""Where the bytes of a static binary are: symbol sizes by crate and by our top-level module.

usage:
  packaging/size-table.py build TARGET
      the static `min-size-symbols` build (`min-size` unstripped; cross/build-static.sh build)
      in target/static/TARGET/min-size-symbols/edge-agent
  packaging/size-table.py table BINARY [BASE]
      Markdown tables of BINARY (unstripped); with BASE (an earlier unstripped build) before,
      after and the difference per row
  packaging/size-table.py write DOC BINARY [BASE]
      the same tables in DOC between its `<!-- size-table:begin -->` and `<!-- size-table:end -->`
      lines (docs/size.md)

Symbols come from `llvm-nm --print-size` (LLVM's binutils, Debian package `llvm`): code and
data with a size, in the file (not .bss). A symbol that names one of our items is ours, also
when it is another crate's generic code instantiated for our types or closures (a thread's body
in `std::thread`, a `BTreeMap` of our types, `serde_json` deserializing our structs), counted
in the module of the first item of ours it names. Otherwise a Rust symbol's crate is its path's
first element; for `<A as B>::f`, A's crate, unless A is a std type or a primitive, then B's.
C and assembly symbols are
ring's when named as ring names them (`ring_core_*`, `fiat_*`, `nistz*`... see RING_C), else
zig's musl libc and compiler-rt's; LLVM's machine outliner's `OUTLINED_FUNCTION_*` (code of
any crate) have a row of their own. An address with several names counts once. What no symbol
covers (string literals, unwind tables, ELF headers, the symbol table itself) is the difference between the
stripped size (llvm-strip of BINARY, as the profile's strip gives within a few bytes) and the
symbols' sum. docs/size.md explains how to read the table.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

OURS = "edge_agent"
STD = {"core", "alloc", "std", "panic_abort", "compiler_builtins", "std_detect", "hashbrown",
       "rustc_demangle", "adler2", "miniz_oxide", "gimli", "addr2line", "object", "memchr"}
C_CODE = "(C: musl libc, compiler-rt)"
# ring's C and assembly: its exported symbols are prefixed, its static functions and tables not.
RING_C = re.compile(r"ring_core_|fiat_|nistz|p256_|p384_|ecp_|_?aes_nohw|_?bsaes|_?vpaes|fe_|"
                    r"fe1305|ge_|x25519|k25519|elem_|add_precomputed|limbs_|bn_|gcm_|poly1305|"
                    r"(Bi|K256|K512|slide)$")
ANON = "(anonymous constants)"
OUTLINED = "(outlined: sequences shared by functions of any crate)"
UNCOVERED = "(no symbol: strings, unwind tables, headers)"
LEGACY_ESCAPES = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$C$": ",",
                  "$SP$": "@", "$u20$": " ", "$u27$": "'", "$u5b$": "[", "$u5d$": "]",
                  "$u7b$": "{", "$u7d$": "}", "$u7e$": "~", "$u3b$": ";", "$u2b$": "+",
                  "$u22$": '"'}


def fail(message):
    print(f"size-table: {message}", file=sys.stderr)
    sys.exit(1)


def tool(name):
    path = shutil.which(name)
    if path is None:
        fail(f"{name} is not on PATH: install LLVM's tools (Debian: apt-get install llvm)")
    return path


def demangle(name):
    """llvm-nm -C leaves the `$LT$`-style escapes of Rust's legacy mangling."""
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    # An identifier starting with an escape has a `_` before it.
    name = re.sub(r"(^|::)_\$", r"\1$", name)
    for escape, text in LEGACY_ESCAPES.items():
        name = name.replace(escape, text)
    return name.replace("..", "::")


def leading_path(text):
    """The path at the start of `text` up to a generic list, a space or the end."""
    return re.match(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*", text)


def path_crate(text):
    match = leading_path(text)
    if match is None or "::" not in match.group(0):
        return None  # a primitive, a reference, a slice, a tuple
    return match.group(0).split("::")[0]


def owner(name):
    """(crate, module path) of a demangled symbol: ours when it names one of our items, also as
    a generic argument (a thread's body, a map of our types, a `Deserialize` impl)."""
    ours = re.search(OURS + r"::[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)?", name)
    if ours is not None:
        return OURS, module_of(ours.group(0))
    if "::" not in name and not name.startswith("<"):
        if RING_C.match(name):
            return "ring", None
        if name.startswith("anon.") or name.startswith(".L"):
            return ANON, None
        if name.startswith("OUTLINED_FUNCTION_"):
            return OUTLINED, None
        return C_CODE, None
    path = name
    if name.startswith("<"):
        inner = name[1:]
        # `<A as B>::f`: A up to the matching ` as ` at depth 0.
        depth, split = 0, None
        for i, c in enumerate(inner):
            if c in "<([":
                depth += 1
            elif c in ">)]":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and inner.startswith(" as ", i):
                split = i
                break
        first = inner[:split] if split is not None else inner
        first = first.lstrip("&*").removeprefix("mut ").removeprefix("const ").removeprefix("dyn ")
        crate = path_crate(first)
        if split is not None and (crate is None or crate in STD):
            trait_crate = path_crate(inner[split + 4:])
            if trait_crate is not None and trait_crate not in STD:
                return trait_crate, module_of(inner[split + 4:])
        if crate is None:
            return "core", None
        path = first
    crate = path_crate(path) or name.split("::")[0]
    return crate, module_of(path)


def module_of(path):
    """Our top-level module (`api`, `compose`, `state`...) of a path inside edge_agent."""
    match = leading_path(path)
    parts = match.group(0).split("::") if match else []
    if len(parts) < 2 or parts[0] != OURS:
        return None
    return parts[1] if len(parts) > 2 else "(crate root)"


def symbols(binary):
    out = subprocess.run([tool("llvm-nm"), "--print-size", "--size-sort", "--radix=d", "-C",
                          binary], check=True, capture_output=True, text=True).stdout
    seen = set()
    for line in out.splitlines():
        fields = line.split(" ", 3)
        if len(fields) < 4 or fields[2] in "bBuUvVwW":
            continue  # .bss takes no file bytes; undefined and weak references none either
        if fields[0] in seen:
            continue  # an alias (zig's libc names `qsort` also `c.stdlib.qsort`)
        seen.add(fields[0])
        yield int(fields[1]), demangle(fields[3])


def stripped_size(binary):
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "stripped")
        subprocess.run([tool("llvm-strip"), "--strip-all", "-o", out, binary], check=True)
        return os.path.getsize(out)


def measure(binary):
    by_crate, by_module = defaultdict(int), defaultdict(int)
    for size, name in symbols(binary):
        crate, module = owner(name)
        by_crate[crate] += size
        if crate == OURS:
            by_module[module or "(generic)"] += size
    total = stripped_size(binary)
    by_crate[UNCOVERED] = total - sum(by_crate.values())
    return total, by_crate, by_module


def table(title, rows, total, base_rows=None, base_total=None, limit=25):
    """Rows by size, the smallest beyond `limit` together; bytes and share of the total."""
    keys = sorted(set(rows) | set(base_rows or {}), key=lambda k: -rows.get(k, 0))
    shown, rest = keys[:limit], keys[limit:]
    lines = []
    if base_rows is None:
        lines += [f"| {title} | bytes | share |", "|---|---:|---:|"]
    else:
        lines += [f"| {title} | before | after | change |", "|---|---:|---:|---:|"]

    def row(label, after, before):
        if base_rows is None:
            return f"| {label} | {after:,} | {100 * after / total:.1f}% |"
        return f"| {label} | {before:,} | {after:,} | {after - before:+,} |"

    for key in shown:
        lines.append(row(f"`{key}`" if not key.startswith("(") else key,
                         rows.get(key, 0), (base_rows or {}).get(key, 0)))
    if rest:
        lines.append(row(f"{len(rest)} others", sum(rows.get(k, 0) for k in rest),
                         sum((base_rows or {}).get(k, 0) for k in rest)))
    lines.append(row("**total**", sum(rows.values()),
                     sum((base_rows or {}).values()) if base_rows is not None else 0))
    return "\n".join(lines)


def tables(binary, base=None):
    total, crates, modules = measure(binary)
    out = [f"Stripped size: {total:,} bytes"]
    if base is None:
        ours = sum(modules.values())
        out += ["", "By crate:", "", table("crate", crates, total), "",
                f"By module of ours ({ours:,} bytes, {100 * ours / total:.1f}%):", "",
                table("module", modules, total)]
    else:
        base_total, base_crates, base_modules = measure(base)
        out[0] = f"Stripped size: {base_total:,} → {total:,} bytes ({total - base_total:+,})"
        out += ["", "By crate:", "", table("crate", crates, total, base_crates, base_total), "",
                "By module of ours:", "", table("module", modules, total, base_modules,
                                                base_total)]
    return "\n".join(out) + "\n"


def build(target):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, EDGE_AGENT_PROFILE="min-size-symbols")
    subprocess.run(["cross/build-static.sh", "build", target], cwd=root, env=env, check=True)
    print(os.path.join(root, "target/static", target, "min-size-symbols/edge-agent"))


def write(doc, binary, base=None):
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    begin, end = "<!-- size-table:begin -->\n", "<!-- size-table:end -->"
    if begin not in text or end not in text:
        fail(f"{doc}: no `{begin.strip()}` ... `{end}` lines to put the tables between")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True, check=True).stdout.strip()
    measured = (f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} at commit `{commit}` "
                f"(`{os.path.relpath(binary)}`{f' against `{os.path.relpath(base)}`' if base else ''}):")
    with open(doc, "w", encoding="utf-8") as f:
        f.write(head + begin + "\n" + measured + "\n\n" + tables(binary, base) + "\n" + end + tail)


def main(argv):
    usage = __doc__.split("\n\n")[1]
    if len(argv) == 2 and argv[0] == "build":
        build(argv[1])
    elif len(argv) in (2, 3) and argv[0] == "table":
        sys.stdout.write(tables(*argv[1:]))
    elif len(argv) in (3, 4) and argv[0] == "write":
        write(*argv[1:])
    else:
        fail("unknown command\n" + usage)


if __name__ == "__main__":
    main(sys.argv[1:])
