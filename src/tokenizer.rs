//! Hugging Face `BertTokenizer(vocab.txt, do_lower_case=True)` built from the `tokenizers`
//! crate's own parts (BertNormalizer, BertPreTokenizer, WordPiece): the same pipeline that
//! transformers serialises into `tokenizer.json` for BERT.

use std::path::Path;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result, read_file};

/// WordPiece tokenizer for a BERT `vocab.txt`, with the ids of its special tokens.
pub struct BertTokenizer {
    inner: Tokenizer,
    /// Lines in vocab.txt (ids run 0..len); larger than the distinct-token count when the
    /// file repeats a piece (the later line wins, as in transformers).
    vocab_lines: usize,
    /// Id of `[CLS]`.
    pub cls_id: u32,
    /// Id of `[SEP]`.
    pub sep_id: u32,
    /// Id of `[MASK]`.
    pub mask_id: u32,
    /// Id of `[PAD]`.
    pub pad_id: u32,
    /// Id of `[UNK]`, which unknown words map to.
    pub unk_id: u32,
}

impl BertTokenizer {
    /// `vocab.txt` of a model directory; `lowercase` is the checkpoint's `do_lower_case`.
    pub fn from_vocab_file(path: &Path, lowercase: bool) -> Result<Self> {
        let bytes = read_file(path)?;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if std::str::from_utf8(line).is_err() {
                return Err(Error::line(path, i + 1, "not valid UTF-8"));
            }
        }
        // Counted as `BufRead::lines` (and Python) count: a final newline ends the last line.
        let vocab_lines = bytes.split(|&b| b == b'\n').count()
            - usize::from(bytes.is_empty() || bytes.ends_with(b"\n"));
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::file(path, "path is not valid UTF-8"))?;
        let wordpiece = WordPiece::from_file(path_str)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| Error::file(path, format!("cannot build WordPiece vocabulary: {e}")))?;
        let mut inner = Tokenizer::new(wordpiece);
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        inner.add_special_tokens(&added);
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .filter(|&i| (i as usize) < vocab_lines)
                .ok_or_else(|| Error::file(path, format!("vocabulary has no {t} token")))
        };
        Ok(BertTokenizer {
            cls_id: id("[CLS]")?,
            sep_id: id("[SEP]")?,
            mask_id: id("[MASK]")?,
            pad_id: id("[PAD]")?,
            unk_id: id("[UNK]")?,
            inner,
            vocab_lines,
        })
    }

    /// Number of ids the vocabulary file defines (its line count).
    pub fn vocab_size(&self) -> usize {
        self.vocab_lines
    }

    /// Token ids of `text` without `[CLS]`/`[SEP]`.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            // The pipeline has no fallible step for BERT (no regex templates, no truncation).
            .unwrap_or_else(|e| panic!("BERT tokenization cannot fail: {e}"))
    }

    /// Token ids of `text` and each token's byte range in `text`.
    pub fn tokenize_with_offsets(&self, text: &str) -> (Vec<u32>, Vec<(usize, usize)>) {
        let e = self
            .inner
            .encode(text, false)
            .unwrap_or_else(|e| panic!("BERT tokenization cannot fail: {e}"));
        (e.get_ids().to_vec(), e.get_offsets().to_vec())
    }

    /// `[CLS] text [SEP]`, truncated to `max_len` ids like transformers' `truncation=True`.
    pub fn encode_with_specials(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut ids = self.tokenize(text);
        ids.truncate(max_len.saturating_sub(2));
        let mut out = Vec::with_capacity(ids.len() + 2);
        out.push(self.cls_id);
        out.extend(ids);
        out.push(self.sep_id);
        out
    }

    /// Id of a vocabulary token (e.g. `"[MASK]"`, `"##ing"`), or `None` if the vocabulary lacks it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of `id`, or `None` if `id` is outside the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Tokens of an id sequence, for display.
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| self.id_to_token(i).unwrap_or_else(|| format!("<{i}>")))
            .collect()
    }
}

/// The shipped zh-mini vocabulary, for unit tests.
#[cfg(test)]
pub(crate) fn shipped_zh_mini() -> BertTokenizer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/zh-mini");
    BertTokenizer::from_vocab_file(&dir.join("vocab.txt"), true).expect("shipped vocabulary")
}
