//! The pretraining corpus: plain-text files tokenized once into a cached binary shard that is
//! memory-mapped and reused, and cut into training sequences.
//!
//! Input: UTF-8 text files (or directories of them, read in name order). Each non-empty line
//! is a text; a blank line ends a document. The shard (`<cache>/<key>/`) holds
//! - `tokens.bin`: every line's token ids back to back, little-endian `u16` when the
//!   vocabulary has fewer than 32768 ids (else `u32`); the top bit of each entry says "this
//!   token continues the previous token's word" (whole-word masking), the rest is the id;
//! - `lines.bin`: one little-endian `u64` per line, its first token's offset, with bit 63 set
//!   when the line starts a document; one final entry holds the total token count;
//! - `meta.json`: what the shard was made from (files with sizes and modification times,
//!   vocabulary hash, lowercasing, segmentation) and its counts.
//!
//! The key is a hash of that description, so a changed file or vocabulary makes a new shard.
//! The shard is written to a temporary directory and renamed into place (atomic).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, read_file};
use crate::tokenizer::BertTokenizer;

const DOC_START: u64 = 1 << 63;

/// How lines become training sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// One line per sequence (`[CLS] line [SEP]`); a longer line is cut into several.
    Lines,
    /// Consecutive lines of a document filled into sequences of up to `max_len` tokens;
    /// every document starts a new sequence.
    Docs,
    /// One line per sequence, truncated (what transformers' `truncation=True` does).
    Truncate,
}

impl Packing {
    /// The lowercase name used on the command line and in saved settings.
    pub fn name(self) -> &'static str {
        match self {
            Packing::Lines => "lines",
            Packing::Docs => "docs",
            Packing::Truncate => "truncate",
        }
    }
}

/// Description of a shard; its hash is the cache key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ShardMeta {
    format: u32,
    files: Vec<(String, u64, u64)>,
    vocab_sha256: String,
    lowercase: bool,
    wwm: bool,
    #[serde(default)]
    token_bytes: usize,
    #[serde(default)]
    lines: usize,
    #[serde(default)]
    documents: usize,
    #[serde(default)]
    tokens: usize,
}

/// A tokenized corpus, memory-mapped.
pub struct Corpus {
    tokens: Mmap,
    lines: Mmap,
    token_bytes: usize,
    /// Mask that removes the word-continuation bit.
    id_mask: u32,
    /// Lines (non-empty texts) in the corpus.
    pub n_lines: usize,
    /// Tokens in the corpus, no special tokens.
    pub n_tokens: usize,
    /// Documents (runs of lines separated by blank lines).
    pub n_documents: usize,
    /// The shard's directory in the cache.
    pub dir: PathBuf,
    /// Whether the shard marks word continuations (whole-word masking).
    pub wwm: bool,
}

/// One training sequence: `len` tokens starting at token offset `start` (no specials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first token in the corpus's token stream.
    pub start: usize,
    /// Number of tokens.
    pub len: usize,
}

/// The input files: each path itself, or the regular files under a directory (recursively,
/// sorted by path, hidden files skipped).
pub fn list_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.is_file() {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::file(p, "corpus file or directory does not exist"));
        }
    }
    if out.is_empty() {
        return Err(Error::invalid("the corpus has no files"));
    }
    Ok(out)
}

impl Corpus {
    /// Opens the cached shard for these inputs, building it first if there is none. A single
    /// input that is itself a shard directory (it has `meta.json` and `tokens.bin`) is opened
    /// as it is, so a shard can be copied to another machine without its text.
    pub fn open_or_build(
        inputs: &[PathBuf],
        vocab_file: &Path,
        tokenizer: &BertTokenizer,
        lowercase: bool,
        wwm: bool,
        cache_dir: &Path,
        progress: bool,
    ) -> Result<Corpus> {
        if let [dir] = inputs
            && dir.join("meta.json").is_file()
            && dir.join("tokens.bin").is_file()
        {
            let c = Self::open(dir)?;
            if c.wwm != wwm {
                return Err(Error::file(
                    dir,
                    format!(
                        "this corpus shard was tokenized with whole-word marks {}",
                        if c.wwm { "on" } else { "off" }
                    ),
                ));
            }
            return Ok(c);
        }
        let files = list_files(inputs)?;
        let mut described = Vec::new();
        for f in &files {
            let md = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            let abs = std::fs::canonicalize(f).map_err(|e| Error::io(f, e))?;
            described.push((abs.display().to_string(), md.len(), mtime));
        }
        let vocab = read_file(vocab_file)?;
        let meta = ShardMeta {
            format: 1,
            files: described,
            vocab_sha256: hex(&Sha256::digest(&vocab)),
            lowercase,
            wwm,
            token_bytes: 0,
            lines: 0,
            documents: 0,
            tokens: 0,
        };
        let key = hex(&Sha256::digest(
            serde_json::to_vec(&meta).expect("serialisable"),
        ))[..16]
            .to_string();
        let dir = cache_dir.join(format!("shard-{key}"));
        if !dir.join("meta.json").is_file() {
            build(&files, meta, tokenizer, &dir, progress)?;
        }
        Self::open(&dir)
    }

    /// Opens a built shard directory.
    pub fn open(dir: &Path) -> Result<Corpus> {
        let meta_path = dir.join("meta.json");
        let meta: ShardMeta = serde_json::from_slice(&read_file(&meta_path)?)
            .map_err(|e| Error::file(&meta_path, format!("malformed shard description: {e}")))?;
        let map = |name: &str| -> Result<Mmap> {
            let p = dir.join(name);
            let f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
            // SAFETY: the shard files are written once (to a temporary directory renamed into
            // place) and never modified afterwards; lengths are checked below.
            unsafe { Mmap::map(&f) }.map_err(|e| Error::io(&p, e))
        };
        let tokens = map("tokens.bin")?;
        let lines = map("lines.bin")?;
        let tb = meta.token_bytes;
        if !(tb == 2 || tb == 4)
            || tokens.len() != meta.tokens * tb
            || lines.len() != (meta.lines + 1) * 8
        {
            return Err(Error::file(
                dir,
                "corpus shard is inconsistent with its meta.json (delete the directory to rebuild it)",
            ));
        }
        Ok(Corpus {
            tokens,
            lines,
            token_bytes: tb,
            id_mask: if tb == 2 { 0x7fff } else { 0x7fff_ffff },
            n_lines: meta.lines,
            n_tokens: meta.tokens,
            n_documents: meta.documents,
            dir: dir.to_path_buf(),
            wwm: meta.wwm,
        })
    }

    fn raw(&self, i: usize) -> u32 {
        match self.token_bytes {
            2 => u16::from_le_bytes([self.tokens[2 * i], self.tokens[2 * i + 1]]) as u32,
            _ => u32::from_le_bytes(self.tokens[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        }
    }

    /// Token ids of a span and, per token, whether it continues the previous token's word.
    pub fn read(&self, span: Span) -> (Vec<u32>, Vec<bool>) {
        let top = !self.id_mask;
        (span.start..span.start + span.len)
            .map(|i| {
                let r = self.raw(i);
                (r & self.id_mask, r & top != 0)
            })
            .unzip()
    }

    fn line(&self, i: usize) -> (usize, bool) {
        let v = u64::from_le_bytes(self.lines[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        ((v & !DOC_START) as usize, v & DOC_START != 0)
    }

    /// The corpus cut into sequences of at most `max_tokens` tokens each.
    pub fn spans(&self, packing: Packing, max_tokens: usize) -> Vec<Span> {
        let max_tokens = max_tokens.max(1);
        let mut out = Vec::new();
        let mut cur: Option<Span> = None;
        for i in 0..self.n_lines {
            let (start, doc_start) = self.line(i);
            let end = self.line(i + 1).0;
            match packing {
                Packing::Truncate => out.push(Span {
                    start,
                    len: (end - start).min(max_tokens),
                }),
                Packing::Lines => {
                    let mut s = start;
                    while s < end {
                        let len = (end - s).min(max_tokens);
                        out.push(Span { start: s, len });
                        s += len;
                    }
                }
                Packing::Docs => {
                    if doc_start && let Some(c) = cur.take() {
                        out.push(c);
                    }
                    // Lines are contiguous in the token stream, so a document is one run.
                    let mut s = start;
                    while s < end {
                        let c = cur.get_or_insert(Span { start: s, len: 0 });
                        let take = (end - s).min(max_tokens - c.len);
                        c.len += take;
                        s += take;
                        if c.len == max_tokens {
                            out.push(cur.take().expect("just filled"));
                        }
                    }
                }
            }
        }
        if let Some(c) = cur {
            out.push(c);
        }
        out.retain(|s| s.len > 0);
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Byte ranges of the words of `text` (jieba, no HMM) — whole-word masking's unit.
fn word_ranges(jieba: &jieba_rs::Jieba, text: &str) -> Vec<(usize, usize)> {
    let base = text.as_ptr() as usize;
    jieba
        .cut(text, false)
        .into_iter()
        .map(|w| {
            let s = w.word.as_ptr() as usize - base;
            (s, s + w.word.len())
        })
        .collect()
}

/// Tokens of one line with their word-continuation flags.
fn encode_line(
    tokenizer: &BertTokenizer,
    jieba: Option<&jieba_rs::Jieba>,
    text: &str,
) -> Vec<(u32, bool)> {
    let (ids, offsets) = tokenizer.tokenize_with_offsets(text);
    let Some(jieba) = jieba else {
        return ids.into_iter().map(|i| (i, false)).collect();
    };
    let words = word_ranges(jieba, text);
    let word_of = |byte: usize| words.partition_point(|&(_, e)| e <= byte);
    let mut prev_word = usize::MAX;
    ids.into_iter()
        .zip(offsets)
        .map(|(id, (s, _))| {
            // A character of the same jieba word, or a WordPiece continuation inside it.
            let w = word_of(s);
            let cont = w == prev_word;
            prev_word = w;
            (id, cont)
        })
        .collect()
}

/// Tokenizes the files into `dir` (via a temporary directory renamed into place).
fn build(
    files: &[PathBuf],
    mut meta: ShardMeta,
    tokenizer: &BertTokenizer,
    dir: &Path,
    progress: bool,
) -> Result<()> {
    let vocab = tokenizer.vocab_size();
    let token_bytes = if vocab <= 0x8000 { 2 } else { 4 };
    if vocab > 0x8000_0000 {
        return Err(Error::invalid("vocabulary too large for the corpus shard"));
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| -> Result<()> {
        let open_w = |name: &str| -> Result<BufWriter<std::fs::File>> {
            let p = tmp.join(name);
            Ok(BufWriter::new(
                std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?,
            ))
        };
        let (mut tok_w, mut line_w) = (open_w("tokens.bin")?, open_w("lines.bin")?);
        let jieba = meta.wwm.then(jieba_rs::Jieba::new);
        let bar = if progress {
            let total: u64 = files
                .iter()
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .sum();
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "tokenizing corpus [{bar:30}] {bytes}/{total_bytes} ({eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (mut n_tokens, mut n_lines, mut n_docs) = (0u64, 0usize, 0usize);
        for f in files {
            let file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
            let mut reader = BufReader::new(file);
            let mut pending: Vec<(String, bool)> = Vec::new();
            let mut new_doc = true;
            let mut line_no = 0usize;
            let mut buf = Vec::new();
            let mut file_lines = 0usize;
            let mut flush = |pending: &mut Vec<(String, bool)>,
                             tok_w: &mut BufWriter<std::fs::File>,
                             line_w: &mut BufWriter<std::fs::File>|
             -> Result<()> {
                let encoded: Vec<Vec<(u32, bool)>> = pending
                    .par_iter()
                    .map(|(t, _)| encode_line(tokenizer, jieba.as_ref(), t))
                    .collect();
                for ((_, doc), toks) in pending.iter().zip(encoded) {
                    if toks.is_empty() {
                        continue;
                    }
                    let mut offset = n_tokens;
                    if *doc {
                        offset |= DOC_START;
                        n_docs += 1;
                    }
                    line_w
                        .write_all(&offset.to_le_bytes())
                        .map_err(|e| Error::io(dir, e))?;
                    n_lines += 1;
                    for (id, cont) in toks {
                        let raw = id | if cont { 1 << (token_bytes * 8 - 1) } else { 0 };
                        let r = if token_bytes == 2 {
                            tok_w.write_all(&(raw as u16).to_le_bytes())
                        } else {
                            tok_w.write_all(&raw.to_le_bytes())
                        };
                        r.map_err(|e| Error::io(dir, e))?;
                        n_tokens += 1;
                    }
                }
                pending.clear();
                Ok(())
            };
            loop {
                buf.clear();
                let n = reader
                    .read_until(b'\n', &mut buf)
                    .map_err(|e| Error::io(f, e))?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                bar.inc(n as u64);
                let text = std::str::from_utf8(&buf)
                    .map_err(|_| Error::line(f, line_no, "not valid UTF-8"))?;
                let text = text.trim();
                if text.is_empty() {
                    new_doc = true;
                    continue;
                }
                file_lines += 1;
                pending.push((text.to_string(), new_doc));
                new_doc = false;
                if pending.len() >= 4096 {
                    flush(&mut pending, &mut tok_w, &mut line_w)?;
                }
            }
            flush(&mut pending, &mut tok_w, &mut line_w)?;
            if file_lines == 0 {
                return Err(Error::file(f, "corpus file has no text"));
            }
        }
        bar.finish_and_clear();
        if n_tokens == 0 {
            return Err(Error::invalid(
                "the corpus has no tokens (every line was empty after tokenization)",
            ));
        }
        line_w
            .write_all(&n_tokens.to_le_bytes())
            .map_err(|e| Error::io(dir, e))?;
        for w in [&mut tok_w, &mut line_w] {
            w.flush().map_err(|e| Error::io(dir, e))?;
            w.get_ref().sync_all().map_err(|e| Error::io(dir, e))?;
        }
        meta.token_bytes = token_bytes;
        meta.lines = n_lines;
        meta.documents = n_docs;
        meta.tokens = n_tokens as usize;
        crate::error::write_atomic(
            &tmp.join("meta.json"),
            &serde_json::to_vec_pretty(&meta).expect("serialisable"),
        )
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_from(text: &str, wwm: bool) -> (tempfile::TempDir, Corpus) {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.txt");
        std::fs::write(&f, text).unwrap();
        let tok = crate::tokenizer::shipped_zh_mini();
        let vocab = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/zh-mini/vocab.txt");
        let c = Corpus::open_or_build(
            &[f],
            &vocab,
            &tok,
            true,
            wwm,
            &tmp.path().join("cache"),
            false,
        )
        .unwrap();
        (tmp, c)
    }

    #[test]
    fn lines_documents_and_packing() {
        let (_t, c) = corpus_from("今天天气很好\n我们去公园\n\n这本书不错\n", false);
        assert_eq!((c.n_lines, c.n_documents), (3, 2));
        assert_eq!(c.n_tokens, 6 + 5 + 5);
        let lines = c.spans(Packing::Lines, 4);
        // 6 → 4 + 2, 5 → 4 + 1, 5 → 4 + 1
        assert_eq!(
            lines.iter().map(|s| s.len).collect::<Vec<_>>(),
            vec![4, 2, 4, 1, 4, 1]
        );
        let docs = c.spans(Packing::Docs, 8);
        // document 1: 11 tokens → 8 + 3; document 2: 5
        assert_eq!(
            docs.iter().map(|s| s.len).collect::<Vec<_>>(),
            vec![8, 3, 5]
        );
        assert_eq!(docs[2].start, 11);
        let (ids, _) = c.read(docs[2]);
        let tok = crate::tokenizer::shipped_zh_mini();
        assert_eq!(ids, tok.tokenize("这本书不错"));
    }

    #[test]
    fn whole_words_are_marked() {
        let (_t, c) = corpus_from("我们喜欢北京天安门\n", true);
        let (ids, cont) = c.read(Span {
            start: 0,
            len: c.n_tokens,
        });
        assert_eq!(ids.len(), 9);
        // jieba: 我们 / 喜欢 / 北京 / 天安门
        assert_eq!(
            cont,
            vec![false, true, false, true, false, true, false, true, true]
        );
    }

    #[test]
    fn reuses_the_shard_and_rejects_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let tok = crate::tokenizer::shipped_zh_mini();
        let vocab = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/zh-mini/vocab.txt");
        let cache = tmp.path().join("cache");
        let open = |input: &Path, wwm: bool| {
            Corpus::open_or_build(
                std::slice::from_ref(&input.to_path_buf()),
                &vocab,
                &tok,
                true,
                wwm,
                &cache,
                false,
            )
        };
        let f = tmp.path().join("a.txt");
        std::fs::write(&f, "好的\n").unwrap();
        let a = open(&f, false).unwrap();
        let b = open(&f, false).unwrap();
        assert_eq!(a.dir, b.dir);
        // the shard directory itself is a corpus
        let c = open(&a.dir, false).unwrap();
        assert_eq!(c.n_tokens, a.n_tokens);
        assert!(open(&a.dir, true).is_err());
        let empty = tmp.path().join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let e = open(&empty, false).err().unwrap().to_string();
        assert!(e.contains("empty.txt") && e.contains("no text"), "{e}");
        let bad = tmp.path().join("bad.txt");
        std::fs::write(&bad, b"ok\n\xff\xfe\n").unwrap();
        let e = open(&bad, false).err().unwrap().to_string();
        assert!(e.contains("bad.txt:2") && e.contains("UTF-8"), "{e}");
    }
}
