"""Byte-level BPE for the demonstration model: trainer, encoder and decoder.

The vocabulary is the kind kinfer's engine reads as tokenizer.ggml.model = "gpt2" with
tokenizer.ggml.pre = "gpt-2":

  - text is first split by the GPT-2 pre-tokenizer regex
        's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    implemented below by hand, following the same match order as kinfer's
    inference/tokenizer_pre.c (m_gpt2 + apply_stage): matches and the unmatched text between
    them both become chunks;
  - every chunk is mapped byte by byte to GPT-2's printable characters (bytes_to_unicode);
  - the merges are applied lowest rank first, leftmost on ties, one at a time, as kinfer's
    tokenizer_bpe.c (and HuggingFace / llama.cpp) do.

Ids: 0 = BOS "<|begin_of_text|>", 1 = EOS "<|end_of_text|>" (both control tokens), then the 256
byte tokens in byte order, then one token per merge in rank order.

Python's unicodedata supplies the letter/number categories; the corpus is ASCII, where that
agrees with kinfer's tables exactly.
"""

import collections
import unicodedata

BOS_TEXT = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"
N_SPECIAL = 2

# Unicode White_Space, the set kinfer's KF_UFLAG_WS marks.
_WS = set([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F,
           0x205F, 0x3000] + list(range(0x2000, 0x200B)))


def bytes_to_unicode():
    """GPT-2's byte -> printable character table: printable Latin-1 maps to itself, the other
    68 bytes to U+0100 onwards in byte order."""
    keep = lambda b: 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE
    table, extra = {}, 0
    for b in range(256):
        if keep(b):
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE2CH = bytes_to_unicode()
CH2BYTE = {c: b for b, c in BYTE2CH.items()}


def _cat(ch):
    """'W' white space, 'L' letter, 'N' number, 'O' anything else."""
    if ord(ch) in _WS:
        return "W"
    c = unicodedata.category(ch)[0]
    return c if c in "LN" else "O"


def _contraction(s, pos, end):
    if s[pos] != "'" or pos + 1 >= end:
        return 0
    a = s[pos + 1]
    if a in "stmd":
        return 2
    if pos + 2 < end and a + s[pos + 2] in ("re", "ve", "ll"):
        return 3
    return 0


def _ws_not_before_nonws(cats, pos, end):
    r = pos
    while r < end and cats[r] == "W":
        r += 1
    n = r - pos
    if n == 0:
        return 0
    if r == end:
        return n
    return n - 1 if n >= 2 else 0


def _match_gpt2(s, cats, pos, end):
    n = _contraction(s, pos, end)
    if n:
        return n
    p = pos + (1 if s[pos] == " " and pos + 1 < end else 0)
    cls = cats[p]
    if cls in "LNO":
        q = p
        while q < end and cats[q] == cls:
            q += 1
        return q - pos
    return _ws_not_before_nonws(cats, pos, end)


def pre_split(text):
    """GPT-2 pre-tokenization: the list of chunks (str) covering `text`."""
    cats = [_cat(c) for c in text]
    out, pos, unmatched, end = [], 0, 0, len(text)
    while pos < end:
        n = _match_gpt2(text, cats, pos, end)
        if n == 0:
            pos += 1
            continue
        if pos > unmatched:
            out.append(text[unmatched:pos])
        out.append(text[pos:pos + n])
        pos += n
        unmatched = pos
    if unmatched < end:
        out.append(text[unmatched:end])
    return out


def _mapped(chunk):
    return "".join(BYTE2CH[b] for b in chunk.encode("utf-8"))


def train(texts, vocab_size, log=print):
    """Learns merges from `texts` until the vocabulary has vocab_size tokens. Returns the merge
    list [(a, b), ...] in rank order. Ties on pair frequency go to the lexicographically
    smallest pair, so the result depends only on the texts. Two merges may spell the same
    token ("a"+"bc" and "ab"+"c"); the second one adds a merge but no token, as the merged id
    is found by its text (kinfer and llama.cpp both look it up that way)."""
    n_new = vocab_size - N_SPECIAL - 256
    known = set()
    freq = collections.Counter()
    for t in texts:
        freq.update(pre_split(t))
    words = [list(_mapped(w)) for w in freq]
    counts = list(freq.values())
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += counts[i]
            where[(a, b)].add(i)
    merges = []
    while len(known) < n_new and pairs:
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if pairs[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        if len(joined) > 1 and joined not in known and joined not in CH2BYTE:
            known.add(joined)
        for i in list(where[best]):
            w, c = words[i], counts[i]
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] -= c
                if pairs[(a, b)] <= 0:
                    del pairs[(a, b)]
            nw, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    nw.append(joined)
                    j += 2
                else:
                    nw.append(w[j])
                    j += 1
            words[i] = nw
            for a, b in zip(nw, nw[1:]):
                pairs[(a, b)] += c
                where[(a, b)].add(i)
        del where[best]
        if log and len(merges) % 500 == 0:
            log("bpe: %d merges, last %r" % (len(merges), joined))
    return merges


class Tokenizer:
    """Encoder/decoder over a merge list (the exact algorithm kinfer runs)."""

    def __init__(self, merges):
        self.merges = [tuple(m) for m in merges]
        self.tokens = [BOS_TEXT, EOS_TEXT] + [BYTE2CH[b] for b in range(256)]
        self.id_of = {t: i for i, t in enumerate(self.tokens)}
        for a, b in self.merges:
            if a + b not in self.id_of:
                self.id_of[a + b] = len(self.tokens)
                self.tokens.append(a + b)
        self.rank = {m: r for r, m in enumerate(self.merges)}
        self.bos, self.eos = 0, 1
        self._cache = {}

    @property
    def n_vocab(self):
        return len(self.tokens)

    def token_types(self):
        """GGUF token_type values: 3 = control for BOS/EOS, 1 = normal for the rest."""
        return [3] * N_SPECIAL + [1] * (self.n_vocab - N_SPECIAL)

    def _word(self, chunk):
        ids = self._cache.get(chunk)
        if ids is not None:
            return ids
        sym = list(_mapped(chunk))
        while len(sym) > 1:
            best, at = None, -1
            for j in range(len(sym) - 1):
                r = self.rank.get((sym[j], sym[j + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, j
            if best is None:
                break
            sym[at:at + 2] = [sym[at] + sym[at + 1]]
        ids = [self.id_of[s] for s in sym]
        self._cache[chunk] = ids
        return ids

    def encode(self, text, add_bos=True):
        ids = [self.bos] if add_bos else []
        for chunk in pre_split(text):
            ids.extend(self._word(chunk))
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            if i < N_SPECIAL:
                continue
            out.extend(CH2BYTE[c] for c in self.tokens[i])
        return out.decode("utf-8", errors="replace")
