"""A small GGUF (version 3) writer and reader, enough for the demonstration model.

Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 key/value count; the
key/values (string key, u32 type, value); the tensor infos (string name, u32 n_dims, u64 ne[0..]
with ne[0] the innermost dimension, u32 type, u64 offset into the data section); padding to
general.alignment (32 by default); the tensor data, each tensor aligned.

Only what the model uses is supported: scalars, strings, arrays of numbers or strings, and
F32 / F16 tensors.
"""

import struct

import numpy as np

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
_SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
           T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}
GGML_F32, GGML_F16 = 0, 1
ALIGN = 32


class U32(int):
    """Marks an int to be written as u32 (plain ints are written as u32 too)."""


class F32(float):
    """Marks a float to be written as f32."""


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value(v, typ=None):
    """(type, bytes) of a Python value."""
    if isinstance(v, bool):
        return T_BOOL, struct.pack("<?", v)
    if isinstance(v, int):
        return T_U32, struct.pack("<I", v)
    if isinstance(v, float):
        return T_F32, struct.pack("<f", v)
    if isinstance(v, str):
        return T_STR, _str(v)
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "arr":
        elem, items = v[1]
        if elem == T_STR:
            body = b"".join(_str(s) for s in items)
        else:
            body = b"".join(struct.pack(_SCALAR[elem], x) for x in items)
        return T_ARR, struct.pack("<IQ", elem, len(items)) + body
    raise TypeError("unsupported GGUF value %r" % (v,))


def arr(elem, items):
    """An array value for write(): arr(T_I32, [...]) or arr(T_STR, [...])."""
    return ("arr", (elem, list(items)))


def write(path, kv, tensors):
    """kv: list of (key, value); tensors: list of (name, numpy array) with dtype float32 or
    float16. A numpy array of shape (n1, n0) becomes ne = [n0, n1] (rows of n0 elements)."""
    head = struct.pack("<4sIQQ", b"GGUF", 3, len(tensors), len(kv))
    for k, v in kv:
        t, b = _value(v)
        head += _str(k) + struct.pack("<I", t) + b
    offs, off = [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        gt = {np.dtype("float32"): GGML_F32, np.dtype("float16"): GGML_F16}[a.dtype]
        ne = list(reversed(a.shape))
        head += _str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        head += struct.pack("<IQ", gt, off)
        offs.append(off)
        off += a.nbytes
        off = (off + ALIGN - 1) // ALIGN * ALIGN
    with open(path, "wb") as f:
        f.write(head)
        f.write(b"\0" * ((-len(head)) % ALIGN))
        pos = 0
        for (name, a), o in zip(tensors, offs):
            f.write(b"\0" * (o - pos))
            b = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
            f.write(b)
            pos = o + len(b)


class Reader:
    """Parses a GGUF file: .kv {key: value} and .tensors {name: numpy array (float32 view of
    the stored F32/F16 data, shape (ne1, ne0))}."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        magic, ver, n_t, n_kv = self._unpack("<4sIQQ")
        if magic != b"GGUF" or ver not in (2, 3):
            raise ValueError("%s: not a GGUF v2/v3 file" % path)
        self.kv = {}
        for _ in range(n_kv):
            k = self._string()
            (t,) = self._unpack("<I")
            self.kv[k] = self._read_value(t)
        infos = []
        for _ in range(n_t):
            name = self._string()
            (nd,) = self._unpack("<I")
            ne = [self._unpack("<Q")[0] for _ in range(nd)]
            gt, off = self._unpack("<IQ")
            infos.append((name, ne, gt, off))
        align = int(self.kv.get("general.alignment", ALIGN))
        base = (self.pos + align - 1) // align * align
        self.tensors = {}
        for name, ne, gt, off in infos:
            n = 1
            for x in ne:
                n *= x
            dt = {GGML_F32: "<f4", GGML_F16: "<f2"}[gt]
            a = np.frombuffer(self.buf, dtype=dt, count=n, offset=base + off)
            self.tensors[name] = a.astype(np.float32).reshape(list(reversed(ne)))
        self.types = {name: gt for name, _, gt, _ in infos}

    def _unpack(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def _string(self):
        (n,) = self._unpack("<Q")
        s = self.buf[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def _read_value(self, t):
        if t == T_STR:
            return self._string()
        if t == T_ARR:
            et, n = self._unpack("<IQ")
            return [self._read_value(et) for _ in range(n)]
        return self._unpack(_SCALAR[t])[0]
