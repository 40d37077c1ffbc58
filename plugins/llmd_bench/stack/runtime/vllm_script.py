"""vllm_script: the `vllm serve` inside a container that starts vLLM from a shell (`sh -c` / `bash -c`).

llm-d's guides start vLLM this way: `command: [/bin/sh, -c]` with the whole `vllm serve ...` script in `args[0]`
(llm-d guides/precise-prefix-cache-aware/ms-kv-events/values.yaml, rendered verbatim by llm-d-modelservice's
`modelCommand: custom`, charts/llm-d-modelservice/templates/_helpers.tpl @llm-d-modelservice-v0.3.8), or
`command: ["/bin/bash", "-c"]` with `exec vllm serve \\ ...` (guides/tiered-prefix-cache/modelserver/gpu/vllm/native/
*/base/patch-vllm.yaml). Flags appended to such a container's args reach the shell as `$0`, `$1`..., never vLLM.

This module finds the one `vllm serve` simple command in such a script, reads the arguments vLLM gets from it, and
rewrites it: flags the configuration sets replace the same-named ones in place (`--flag value` and `--flag=value`),
the rest are added after its last argument; every other byte of the script stays as it was. What cannot be read
for certain is refused (`Refused`, with the reason): no or several `vllm serve`, a heredoc, `eval`, a `vllm serve`
inside a quoted string or a command substitution (a nested shell), a variable or `"$@"` where a flag may stand.
The lexer follows POSIX sh's token rules (XCU 2.3 Token Recognition, 2.6 Word Expansions); bash-only syntax it does
not model (`$'...'`, here-strings) is refused.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Literal

from pydantic import BaseModel, ConfigDict

SHELLS = frozenset({"sh", "bash", "dash", "ash"})
# words that may stand before the command name of a simple command without being it
PREFIX_WORDS = frozenset({"exec", "then", "do", "else", "elif", "if", "while", "until", "!", "{", "time", "nohup",
                          "command"})
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PRINTERS = frozenset({"echo", "printf", ":", "logger"})  # a message naming `vllm serve` runs nothing
REDIRECTIONS = ("&>>", "<<-", "<<<", "<<", ">>", "<&", ">&", "<>", ">|", "&>", "<", ">")
OPERATORS = (";;", "&&", "||", "|&", ";&", ";", "&", "|", "(", ")")


class Refused(ValueError):
    """The script cannot be read or patched for certain; the message says why."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Word(_Frozen):
    """A shell word: where it stands in the script, its value with quotes removed (expansions kept as written)."""

    start: int
    end: int
    value: str
    expands: bool = False   # holds a parameter expansion or command substitution: its value is not known here
    splits: bool = False    # an unquoted expansion: the shell may split it into several words
    many: bool = False      # "$@", "$*", "${a[@]}": any number of words


class Op(_Frozen):
    kind: Literal["op", "redirect"]
    text: str
    start: int
    end: int


class Serve(_Frozen):
    """The `vllm serve` simple command: its words up to `serve`, and vLLM's arguments after it."""

    head: list[Word]
    args: list[Word]


class Location(_Frozen):
    """Where a container's shell script is: `command[index]` or `args[index]`."""

    field: Literal["command", "args"]
    index: int
    shell: str


# -- where the script is ------------------------------------------------------------------------------------------

def locate(command: list[str], args: list[str]) -> Location | None:
    """The script of a container run as `sh -c SCRIPT` / `bash -ec SCRIPT` (command, or command then args); None
    when the command is not a shell. A shell that runs a script file is refused: its flags cannot be seen."""
    if not command or posixpath.basename(command[0]) not in SHELLS:
        return None
    argv = [("command", i, t) for i, t in enumerate(command)] + [("args", i, t) for i, t in enumerate(args)]
    i = 1
    while i < len(argv):
        token = argv[i][2]
        if token in ("-o", "+o", "-O", "+O"):   # set -o pipefail: the option's name follows
            i += 2
            continue
        if token.startswith("--") and len(token) > 2:  # bash's long options (--login, --norc)
            i += 1
            continue
        if token.startswith(("-", "+")) and len(token) > 1 and token != "--":
            if "c" in token[1:]:
                if i + 1 >= len(argv):
                    raise Refused(f"`{' '.join(command)}` has no script after {token}")
                field, index, _ = argv[i + 1]
                return Location(field=field, index=index, shell=command[0])  # type: ignore[arg-type]
            i += 1
            continue
        break
    raise Refused(f"`{' '.join(t for _, _, t in argv[:i + 1])}` runs a script file, whose vLLM flags cannot be "
                  "seen; start vLLM with `vllm serve` in args, or from `sh -c`")


# -- lexing ---------------------------------------------------------------------------------------------------------

def _skip_quoted(s: str, i: int) -> int:
    """Index after the quoted string that starts at s[i] (a ' or ")."""
    q = s[i]
    i += 1
    while i < len(s):
        if q == '"' and s[i] == "\\":
            i += 2
            continue
        if s[i] == q:
            return i + 1
        i += 1
    raise Refused("an unterminated quote")


def _expansion_end(s: str, i: int) -> tuple[int, bool]:
    """(end, many) of the expansion at s[i] ('$' or '`'); end == i + 1 for a lone '$' (a literal dollar)."""
    n = len(s)
    if s[i] == "`":
        j = i + 1
        while j < n and s[j] != "`":
            j += 2 if s[j] == "\\" else 1
        if j >= n:
            raise Refused("an unterminated backquote")
        return j + 1, False
    nxt = s[i + 1:i + 2]
    if nxt in ("(", "{"):
        close = ")" if nxt == "(" else "}"
        depth, j = 0, i + 1
        while j < n:
            ch = s[j]
            if ch in ("'", '"') and nxt == "(":
                j = _skip_quoted(s, j)
                continue
            if ch == "\\":
                j += 2
                continue
            if ch == nxt:
                depth += 1
            elif ch == close:
                depth -= 1
                if depth == 0:
                    inner = s[i + 2:j]
                    many = nxt == "{" and (inner in ("@", "*") or "[@]" in inner or "[*]" in inner
                                           or inner.startswith("!"))
                    return j + 1, many
            j += 1
        raise Refused(f"an unterminated ${nxt}")
    if nxt == "'":
        raise Refused("ANSI-C quoting ($'...')")
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s[i + 1:])
    if m:
        return i + 1 + m.end(), False
    if nxt and nxt in "@*#?$!-0123456789":
        return i + 2, nxt in "@*"
    return i + 1, False


def lex(s: str) -> list[Word | Op]:
    """The script's words, operators and redirections, in order (comments and line continuations dropped)."""
    toks: list[Word | Op] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            i += 1
            continue
        if s.startswith("\\\n", i):
            i += 2
            continue
        if c == "\n":
            toks.append(Op(kind="op", text="\n", start=i, end=i + 1))
            i += 1
            continue
        if c == "#":
            j = s.find("\n", i)
            i = n if j < 0 else j
            continue
        redirect = next((r for r in REDIRECTIONS if s.startswith(r, i)), None)
        if redirect:
            if redirect.startswith("<<"):
                raise Refused("a heredoc or here-string (<<)")
            toks.append(Op(kind="redirect", text=redirect, start=i, end=i + len(redirect)))
            i += len(redirect)
            continue
        op = next((o for o in OPERATORS if s.startswith(o, i)), None)
        if op:
            toks.append(Op(kind="op", text=op, start=i, end=i + len(op)))
            i += len(op)
            continue
        start, value, quoted = i, [], False
        expands = splits = many = False
        while i < n:
            c = s[i]
            if c in " \t\n;&|()<>":
                break
            if c == "\\":
                if s.startswith("\\\n", i):
                    i += 2
                    continue
                value.append(s[i + 1:i + 2])
                quoted = True
                i += 2
                continue
            if c == "'":
                j = s.find("'", i + 1)
                if j < 0:
                    raise Refused("an unterminated single quote")
                value.append(s[i + 1:j])
                quoted, i = True, j + 1
                continue
            if c == '"':
                quoted = True
                i += 1
                while True:
                    if i >= n:
                        raise Refused("an unterminated double quote")
                    c = s[i]
                    if c == '"':
                        i += 1
                        break
                    if c == "\\" and s[i + 1:i + 2] in ("$", "`", '"', "\\", "\n"):
                        if s[i + 1] != "\n":
                            value.append(s[i + 1])
                        i += 2
                        continue
                    if c in "$`":
                        j, m = _expansion_end(s, i)
                        value.append(s[i:j])
                        if j > i + 1:
                            expands, many = True, many or m
                        i = j
                        continue
                    value.append(c)
                    i += 1
                continue
            if c in "$`":
                j, m = _expansion_end(s, i)
                value.append(s[i:j])
                if j > i + 1:
                    expands, splits, many = True, True, many or m
                i = j
                continue
            value.append(c)
            i += 1
        text = "".join(value)
        if not quoted and text.isdigit() and i < n and s[i] in "<>":
            continue  # an IO number (2>&1): part of the redirection that follows
        toks.append(Word(start=start, end=i, value=text, expands=expands, splits=splits, many=many))
    return toks


def _commands(toks: list[Word | Op]) -> list[list[Word]]:
    """Each simple command's words, without redirections and their targets."""
    out: list[list[Word]] = [[]]
    target = False
    for t in toks:
        if isinstance(t, Op):
            if t.kind == "redirect":
                target = True
            else:
                out.append([])
            continue
        if target:
            target = False
            continue
        out[-1].append(t)
    return [c for c in out if c]


def _name_at(words: list[Word]) -> int:
    """Index of the command name (after `exec`, `then`, assignments, `env A=b` ...)."""
    k = 0
    while k < len(words):
        w = words[k]
        if w.value in PREFIX_WORDS or ASSIGNMENT.match(w.value) or (w.value == "env" and k + 1 < len(words)
                                                                  and ASSIGNMENT.match(words[k + 1].value)):
            k += 1
            continue
        return k
    return k


def find_serve(script: str) -> Serve:
    """The script's one `vllm serve` command; refused when there is none or several, or the script hides vLLM's
    flags (eval, a nested shell, a heredoc)."""
    toks = lex(script)
    found = []
    for words in _commands(toks):
        k = _name_at(words)
        if k < len(words) and words[k].value == "eval":
            raise Refused("it runs `eval`, whose arguments become commands only at run time")
        printing = k < len(words) and words[k].value in PRINTERS
        for w in words:
            if "vllm serve" in " ".join(w.value.split()) and (w.expands or not printing):
                raise Refused(f"`vllm serve` is inside the word {w.value[:60]!r} (a nested shell or command "
                              "substitution)")
        if k + 1 < len(words) and posixpath.basename(words[k].value) == "vllm" and words[k + 1].value == "serve":
            found.append(Serve(head=words[:k + 2], args=words[k + 2:]))
    if not found:
        raise Refused("it has no `vllm serve` command")
    if len(found) > 1:
        raise Refused(f"it has {len(found)} `vllm serve` commands")
    return found[0]


def _is_flag(w: Word) -> bool:
    return w.value.startswith("--") and len(w.value) > 2


def _check_args(serve: Serve) -> None:
    """Every flag is written out, and no expansion stands where a flag may be."""
    prev: Word | None = None
    for i, w in enumerate(serve.args):
        if w.many:
            raise Refused(f"`{w.value}` passes any number of arguments to vLLM, flags included")
        if _is_flag(w) and w.expands and any(ch in w.value.split("=", 1)[0] for ch in "$`"):
            raise Refused(f"the flag name in `{w.value}` is an expansion")
        if w.expands and not _is_flag(w):
            value_of_flag = prev is not None and _is_flag(prev) and "=" not in prev.value
            if not (i == 0 or value_of_flag):
                raise Refused(f"`{w.value}` may expand to vLLM flags")
        prev = w


def serve_args(script: str) -> list[str]:
    """The arguments vLLM gets from the script's `vllm serve` (expansions as written)."""
    serve = find_serve(script)
    _check_args(serve)
    return [w.value for w in serve.args]


def flag_name(token: str) -> str:
    """As existing.flag_name: `--max_num_seqs=8` and `--no-X` name the settings `max-num-seqs` and `X`."""
    name = token[2:].split("=", 1)[0].replace("_", "-")
    return name[3:] if name.startswith("no-") else name


def _render(flag: str, values: list[str], inline: bool) -> str:
    if inline and len(values) == 1:
        return f"{flag}={shlex.quote(values[0])}"
    return " ".join([flag, *(shlex.quote(v) for v in values)])


def patch(script: str, ours: list[tuple[str, list[str]]]) -> str:
    """The script with the configuration's flags in its `vllm serve`: same-named flags replaced in place (the first
    occurrence; later ones removed with the separator before them), the others added after its last argument (one
    per continued line when the command spans lines). Values are shell-quoted (shlex). Nothing else changes."""
    serve = find_serve(script)
    _check_args(serve)
    want = {flag_name(f): (f, values) for f, values in ours}
    words = [*serve.head, *serve.args]
    edits: list[tuple[int, int, str]] = []
    placed: set[str] = set()
    i = len(serve.head)
    while i < len(words):
        w = words[i]
        name = flag_name(w.value) if _is_flag(w) else None
        if name is None or name not in want:
            i += 1
            continue
        flag, values = want[name]
        end, j = w.end, i + 1
        if "=" not in w.value:
            for _ in range(len(values)):
                if j < len(words) and not _is_flag(words[j]):
                    end, j = words[j].end, j + 1
        if name in placed:
            edits.append((words[i - 1].end, end, ""))
        else:
            edits.append((w.start, end, _render(flag, values, "=" in w.value)))
            placed.add(name)
        i = j
    rest = [_render(f, v, False) for f, v in ours if flag_name(f) not in placed]
    if rest:
        last, first = words[-1], words[0]
        if "\\\n" in script[first.start:last.end]:
            line_start = script.rfind("\n", 0, last.start) + 1
            indent = re.match(r"[ \t]*", script[line_start:]).group(0)  # type: ignore[union-attr]
            if line_start <= first.start:
                indent += "  "
            text = "".join(f" \\\n{indent}{r}" for r in rest)
        else:
            text = "".join(f" {r}" for r in rest)
        edits.append((last.end, last.end, text))
    out = script
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        out = out[:start] + text + out[end:]
    # the patched script must read back as vLLM getting exactly our flags, last of their name
    args = serve_args(out)
    for f, values in ours:
        got = _last(args, flag_name(f))
        if got is None or got[0] != f or got[1][:len(values)] != values:  # positionals may follow a flag
            raise Refused(f"patching it would give vLLM {got!r}, not {f} {values!r}")
    return out


def _last(args: list[str], name: str) -> tuple[str, list[str]] | None:
    """The last occurrence of a flag in vLLM's arguments, as (flag as written, its values)."""
    found = None
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--") and flag_name(token) == name:
            if "=" in token:
                found, i = (token.split("=", 1)[0], [token.split("=", 1)[1]]), i + 1
                continue
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                j += 1
            found, i = (token, args[i + 1:j]), j
            continue
        i += 1
    return found
