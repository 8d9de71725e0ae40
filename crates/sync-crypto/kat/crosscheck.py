"""Independent cross-check of the sync-crypto known-answer values (src/kat_tests.rs) and of the
test vectors of docs/PROTOCOL.md.

Uses Python `cryptography` (>= 44, for Argon2id): HKDF-SHA256, Ed25519, X25519, Argon2id, and
ChaCha20-Poly1305 with a hand-written HChaCha20 for XChaCha20-Poly1305; MessagePack is encoded by
hand. The hybrid KEM envelope lines also need ML-KEM-768, from the pure-Python `kyber-py`
(`pip install kyber-py`); without it they are reported UNCHECKED. CI (`.ci/run`) installs both in a
virtual environment and runs this script; run it yourself with
`python3 crates/sync-crypto/kat/crosscheck.py` from anywhere:

1. it prints the same name/hex lines as the Rust KATs and compares them with the values in
   src/kat_tests.rs (`MISMATCH kat <name>` for each that differs);
2. it recomputes every vector of docs/PROTOCOL.md from the document's own inputs, prints
   `MISMATCH <name> computed: <value>` for each that differs and `UNCHECKED <name>` for each it
   does not read, and exits 1 if there is any (0 and "N of N vectors agree" otherwise).
"""
import hashlib, struct
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

KAT = {}
def kat(name, value):
    """Prints a known-answer value and keeps it for the comparison with src/kat_tests.rs."""
    KAT[name] = value; print(name, value)
def seq(n, start): return bytes((start+i) & 0xff for i in range(n))
def hkdf(ikm, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"0k-sync/v1/key-schedule", info=info).derive(ikm)
def pub(seed):
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
def sign(seed, m): return Ed25519PrivateKey.from_private_bytes(seed).sign(m)

def rotl(v,c): return ((v<<c)&0xffffffff)|(v>>(32-c))
def qr(s,a,b,c,d):
    s[a]=(s[a]+s[b])&0xffffffff; s[d]=rotl(s[d]^s[a],16)
    s[c]=(s[c]+s[d])&0xffffffff; s[b]=rotl(s[b]^s[c],12)
    s[a]=(s[a]+s[b])&0xffffffff; s[d]=rotl(s[d]^s[a],8)
    s[c]=(s[c]+s[d])&0xffffffff; s[b]=rotl(s[b]^s[c],7)
def hchacha20(key, nonce16):
    s=[0x61707865,0x3320646e,0x79622d32,0x6b206574]+list(struct.unpack('<8I',key))+list(struct.unpack('<4I',nonce16))
    for _ in range(10):
        qr(s,0,4,8,12);qr(s,1,5,9,13);qr(s,2,6,10,14);qr(s,3,7,11,15)
        qr(s,0,5,10,15);qr(s,1,6,11,12);qr(s,2,7,8,13);qr(s,3,4,9,14)
    return struct.pack('<8I',*(s[0:4]+s[12:16]))
def xchacha_encrypt(key, nonce24, pt, aad):
    sub=hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(b"\0\0\0\0"+nonce24[16:], pt, aad)

secret=seq(32,0)
sync_key=hkdf(secret,b"0k-sync/v1/sync-key")
auth_seed=hkdf(secret,b"0k-sync/v1/auth-seed")
gid=pub(auth_seed)
blob=seq(16,0xb0)
content=hkdf(secret,b"0k-sync/v1/content-key"+blob)
dseed=seq(32,0x20); did=pub(dseed)
kat("sync_key",sync_key.hex()); kat("group_id",gid.hex()); kat("content",content.hex()); kat("device_id",did.hex())
ch=b"0k-sync/v1/hello"+b"\x11"*32+b"\x22"*32+did+gid
kat("hello_sig",sign(auth_seed,ch).hex())
nonce=seq(24,0x40); epoch=struct.pack('>I',0)
aad=b"\x01"+gid+did+blob+epoch
ct=xchacha_encrypt(sync_key,nonce,b"hello 0k-sync",aad)
body=b"\x01"+epoch+did+nonce+ct
sig=sign(dseed,b"0k-sync/v1/seal-sig"+gid+blob+body)
kat("sealed_v1",(body+sig).hex())
# Version 2: the sender's sequence number (1) in the header and the AAD.
sq=struct.pack('>Q',1)
aad=b"\x02"+gid+did+blob+epoch+sq
ct=xchacha_encrypt(sync_key,nonce,b"hello 0k-sync",aad)
body=b"\x02"+epoch+did+sq+nonce+ct
sig=sign(dseed,b"0k-sync/v1/seal-sig"+gid+blob+body)
kat("sealed",(body+sig).hex())
try:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    a=Argon2id(salt=seq(16,0x10),length=32,iterations=2,lanes=1,memory_cost=19*1024)
    kat("pass_secret",a.derive(b"correct horse battery staple").hex())
    salt=hashlib.sha256(b"0k-sync/v1/mailbox"+b"ABCDEFGH").digest()[:16]
    a=Argon2id(salt=salt,length=32,iterations=2,lanes=1,memory_cost=19*1024)
    kat("mailbox",a.derive(b"IJKLMNOP").hex())
except Exception as e: print("argon2 unavailable:",e)

# Hybrid KEM envelope (src/kem.rs): X25519 + ML-KEM-768, combined with HKDF-SHA256, payload under
# ChaCha20-Poly1305. Sender = the device above, recipient seed 60 61 … 7f, epoch 7.
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
def hkdf_with(salt, ikm, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)
def x25519_pub(sk):
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
def x25519(sk, pk):  # raises on the all-zero shared secret (low-order pk), as the Rust code refuses it
    return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))
rseed=seq(32,0x60); rid=pub(rseed)
kem_seed=lambda label: hkdf_with(b"0k-sync/v1/kem", rseed, label)
r_xsk=kem_seed(b"0k-sync/v1/kem-x25519"); r_xpk=x25519_pub(r_xsk)
kat("kem_x25519_pk",r_xpk.hex())
try:
    from kyber_py.ml_kem import ML_KEM_768
except ImportError as e:
    ML_KEM_768=None; print("kyber-py unavailable (pip install kyber-py), envelope lines skipped:",e)
if ML_KEM_768 is not None:
    # FIPS 203 ML-KEM.KeyGen_internal(d, z) and Encaps_internal(ek, m).
    r_ek,r_dk=ML_KEM_768._keygen_internal(kem_seed(b"0k-sync/v1/kem-mlkem-d"), kem_seed(b"0k-sync/v1/kem-mlkem-z"))
    kat("kem_mlkem_ek_sha256",hashlib.sha256(r_ek).hexdigest())
    rng=seq(64,0x40); esk,m=rng[:32],rng[32:]  # CountingRng(0x40): ephemeral X25519 secret, then m
    epk=x25519_pub(esk)
    ss_mlkem,ct_mlkem=ML_KEM_768._encaps_internal(r_ek,m)
    ctx=gid+struct.pack(">I",7)+did+rid
    key=hkdf_with(b"0k-sync/v1/envelope", ss_mlkem+x25519(esk,r_xpk)+epk+r_xpk, b"0k-sync/v1/envelope-key"+ctx)
    header=b"\x01"+epk+ct_mlkem
    payload=seq(32,0x80)
    envelope=header+ChaCha20Poly1305(key).encrypt(b"\0"*12,payload,header+ctx)
    assert len(envelope)==1169
    kat("envelope_sha256",hashlib.sha256(envelope).hexdigest())
    kat("envelope_prefix",envelope[:32].hex())
    # The recipient's side: decapsulate, X25519 with its own secret, open.
    ss_open=ML_KEM_768._decaps_internal(r_dk,envelope[33:1121])
    key_open=hkdf_with(b"0k-sync/v1/envelope", ss_open+x25519(r_xsk,envelope[1:33])+envelope[1:33]+r_xpk, b"0k-sync/v1/envelope-key"+ctx)
    assert ChaCha20Poly1305(key_open).decrypt(b"\0"*12,envelope[1121:],envelope[:1121]+ctx)==payload

# ---------------------------------------------------------------------------------------------
# docs/PROTOCOL.md: every vector recomputed from the document's own inputs by this independent
# implementation (Python `cryptography`, a hand-written MessagePack encoder) and compared with
# the document. The Rust tests (crates/*/tests/protocol_*.rs, invite_vectors.rs) check the same
# values against the code.
import base64, os, sys

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "docs", "PROTOCOL.md")

def load_vectors(path):
    """name -> raw value, from the ```vector blocks (same rules as crates/sync-testkit/src/doc_vectors.rs)."""
    values, in_block, current = {}, False, None
    for raw in open(path, encoding="utf-8").read().splitlines():
        if not in_block:
            in_block = raw.strip() == "```vector"
            continue
        if raw.strip().startswith("```"):
            in_block, current = False, None
            continue
        line, quoted = raw, False
        for i, c in enumerate(raw):
            if c == '"': quoted = not quoted
            elif c == "#" and not quoted:
                line = raw[:i]; break
        if not line.strip(): continue
        if "=" in line:
            name, value = line.split("=", 1)
            current = name.strip(); values[current] = value.strip()
        elif raw[0].isspace() and current:
            values[current] += " " + line.strip()
        else:
            raise SystemExit("bad vector line: " + raw)
    return values

V = load_vectors(DOC)
used = set()
def raw(name):
    used.add(name); v = V[name]
    while v.startswith("@"): v = V[v[1:]]
    return v
def vb(name): return bytes.fromhex("".join(raw(name).split()))
def vt(name):
    v = raw(name); assert v[0] == v[-1] == '"', name; return v[1:-1]
def vu(name): return int(raw(name).replace("_", ""))
def vopt(name, read): return None if raw(name) == "nil" else read(name)

mismatches = []
def check(name, value):
    doc = vt(name) if isinstance(value, str) else vu(name) if isinstance(value, int) else vb(name)
    if doc != value:
        shown = value.hex() if isinstance(value, bytes) else value
        mismatches.append(name); print("MISMATCH", name, "computed:", shown)

# MessagePack, the compact forms the protocol uses.
def mp_uint(v):
    for limit, marker, fmt in ((0x7f, None, None), (0xff, 0xcc, ">B"), (0xffff, 0xcd, ">H"), (0xffffffff, 0xce, ">I")):
        if v <= limit: return bytes([v]) if marker is None else bytes([marker]) + struct.pack(fmt, v)
    return b"\xcf" + struct.pack(">Q", v)
def mp_bin(b):
    n = len(b)
    return (bytes([0xc4, n]) if n <= 0xff else b"\xc5" + struct.pack(">H", n) if n <= 0xffff else b"\xc6" + struct.pack(">I", n)) + b
def mp_str(s):
    b = s.encode(); n = len(b)
    return (bytes([0xa0 | n]) if n < 32 else bytes([0xd9, n]) if n <= 0xff else b"\xda" + struct.pack(">H", n)) + b
def mp_array(items):
    n = len(items)
    return (bytes([0x90 | n]) if n <= 15 else b"\xdc" + struct.pack(">H", n)) + b"".join(items)
NIL, FALSE, TRUE = b"\xc0", b"\xc2", b"\xc3"
def mp_opt(v, enc): return NIL if v is None else enc(v)
def frame(type_byte, fields):
    body = b"\x92" + bytes([type_byte]) + mp_array(fields)
    return struct.pack(">I", len(body)) + body

# Keys, device, Hello.
secret = vb("keys.group_secret")
auth_seed = hkdf(secret, b"0k-sync/v1/auth-seed")
check("keys.sync_key", hkdf(secret, b"0k-sync/v1/sync-key"))
check("keys.auth_seed", auth_seed)
check("keys.group_id", pub(auth_seed))
check("keys.content_key", hkdf(secret, b"0k-sync/v1/content-key" + vb("keys.content_blob_id")))
check("device.id", pub(vb("device.secret_key")))
transcript = b"0k-sync/v1/hello" + vb("hello.binding") + vb("hello.relay_id") + vb("hello.device") + vb("hello.group_id")
check("hello.transcript", transcript)
check("hello.signature", sign(auth_seed, transcript))

# Large content: one chunk (PROTOCOL 15.1).
c_id = vb("content.content_id")
c_key = hkdf(secret, b"0k-sync/v1/content-key" + c_id)
check("content.key", c_key)
c_plain = vt("content.plaintext").encode()
c_size, c_chunk = vu("content.plain_size"), vu("content.chunk_size")
c_nonce = b"0kc1" + (0).to_bytes(8, "big") + b"\x01" + b"\0" * 11
check("content.nonce_0", c_nonce)
c_aad = b"0k-sync/v1/content-chunk" + c_id + c_size.to_bytes(8, "big") + c_chunk.to_bytes(4, "big") + (0).to_bytes(8, "big")
check("content.aad_0", c_aad)
check("content.sealed", xchacha_encrypt(c_key, c_nonce, c_plain, c_aad))

# Sealing.
s_secret_key, s_group, s_blob, s_nonce = vb("seal.sender_secret_key"), vb("seal.group_id"), vb("seal.blob_id"), vb("seal.nonce")
s_sender, s_epoch = pub(s_secret_key), struct.pack(">I", vu("seal.epoch"))
s_seq = struct.pack(">Q", vu("seal.seq"))
s_aad = b"\x02" + s_group + s_sender + s_blob + s_epoch + s_seq
check("seal.aad", s_aad)
s_body = b"\x02" + s_epoch + s_sender + s_seq + s_nonce + xchacha_encrypt(vb("seal.key"), s_nonce, vt("seal.plaintext").encode(), s_aad)
s_signed = b"0k-sync/v1/seal-sig" + s_group + s_blob + s_body
check("seal.signed_message", s_signed)
check("seal.sealed", s_body + sign(s_secret_key, s_signed))

# Short code (Crockford-like base32, 5 bits per symbol, most significant first).
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
bits = int.from_bytes(vb("shortcode.random_bytes"), "big")
symbols = "".join(ALPHABET[(bits >> (5 * (15 - i))) & 31] for i in range(16))
check("shortcode.text", "-".join(symbols[i:i + 4] for i in range(0, 16, 4)))
typed = "".join({"O": "0", "I": "1", "L": "1"}.get(c, c) for c in vt("shortcode.typed").upper() if c not in "- \t")
assert typed == symbols, "shortcode.typed does not parse to the code"
check("shortcode.lookup_id", symbols[:8])
check("shortcode.key_half", symbols[8:])

# Invites.
def descriptor(prefix):
    if prefix == "invite.random":
        return mp_str("Random"), mp_bin(vb(prefix + ".group_secret"))
    params = mp_array([mp_uint(vu(prefix + ".memory_kib")), mp_uint(vu(prefix + ".iterations")), mp_uint(vu(prefix + ".parallelism"))])
    return b"\x81" + mp_str("Passphrase") + mp_array([params, mp_bin(vb(prefix + ".salt"))]), NIL
for prefix in ("invite.random", "invite.passphrase"):
    expires = vu(prefix + ".now_ms") + 1000 * vu(prefix + ".ttl_secs")
    check(prefix + ".expires_at_ms", expires)
    group, carried = descriptor(prefix)
    body = mp_array([mp_bin(vb(prefix + ".relay_id")), mp_array([mp_str(vt(prefix + ".relay_addr"))]),
                     mp_bin(vb(prefix + ".group_id")), group, carried, mp_bin(vb(prefix + ".invite_id")), mp_uint(expires)])
    check(prefix + ".bytes", b"\x01" + body)
check("invite.random.qr", "0ksync1:" + base64.urlsafe_b64encode(vb("invite.random.bytes")).decode().rstrip("="))

# Frames.
blob_id, sealed = vb("frame.push.blob_id"), vb("frame.push.payload")
f = lambda n: "frame." + n
check(f("hello"), frame(0x01, [mp_uint(vu(f("hello.request_id"))), mp_uint(vu(f("hello.version"))),
      mp_bin(vb(f("hello.group_id"))), mp_uint(vu(f("hello.last_cursor"))), mp_bin(vb(f("hello.auth_signature"))),
      mp_opt(vopt(f("hello.admission_token"), vb), mp_bin)]))
limits = [mp_uint(vu(f("welcome." + k))) for k in ("max_blob_bytes", "max_frame_bytes", "max_pull_count", "max_pull_bytes",
          "default_ttl_secs", "max_ttl_secs", "idle_timeout_secs", "max_in_flight")]
check(f("welcome"), frame(0x02, [mp_uint(vu(f("welcome.request_id"))), mp_bin(vb(f("welcome.relay_id"))),
      mp_uint(vu(f("welcome.max_cursor"))), mp_array(limits), mp_uint(vu(f("welcome.store_id")))]))
check(f("push"), frame(0x10, [mp_uint(vu(f("push.request_id"))), mp_bin(blob_id), mp_bin(sealed), mp_uint(vu(f("push.ttl_secs")))]))
check(f("push_ack"), frame(0x11, [mp_uint(vu(f("push_ack.request_id"))), mp_bin(vb(f("push_ack.blob_id"))),
      mp_uint(vu(f("push_ack.cursor"))), mp_uint(vu(f("push_ack.server_time_ms")))]))
check(f("notify"), frame(0x14, [mp_uint(vu(f("notify.cursor"))), mp_bin(vb(f("notify.blob_id"))), mp_bin(vb(f("notify.sender"))),
      mp_uint(vu(f("notify.size")))]))
check(f("pull"), frame(0x12, [mp_uint(vu(f("pull.request_id"))), mp_uint(vu(f("pull.after"))), mp_uint(vu(f("pull.limit"))),
      mp_opt(vopt(f("pull.max_bytes"), vu), mp_uint)]))
entry = mp_array([mp_uint(vu(f("pull_response.entry.cursor"))), mp_bin(vb(f("pull_response.entry.blob_id"))),
                  mp_bin(vb(f("pull_response.entry.sender"))), mp_bin(vb(f("pull_response.entry.payload"))),
                  mp_uint(vu(f("pull_response.entry.timestamp_ms")))])
has_more = {"true": TRUE, "false": FALSE}[raw(f("pull_response.has_more"))]
check(f("pull_response"), frame(0x13, [mp_uint(vu(f("pull_response.request_id"))), mp_array([entry]), has_more,
      mp_uint(vu(f("pull_response.max_cursor"))), mp_uint(vu(f("pull_response.removed")))]))
check(f("error"), frame(0x7f, [mp_opt(vopt(f("error.request_id"), vu), mp_uint), mp_uint(vu(f("error.code"))),
      mp_str(vt(f("error.message"))), mp_opt(vopt(f("error.retry_after_ms"), vu), mp_uint)]))
check(f("ping"), frame(0x20, [mp_uint(vu(f("ping.request_id")))]))
check(f("bye"), frame(0x7e, [mp_opt(vopt(f("bye.reason"), vt), mp_str)]))
check(f("invite_get"), frame(0x52, [mp_uint(vu(f("invite_get.request_id"))), mp_str(vt(f("invite_get.lookup_id")))]))

# Argon2id: the passphrase group and the invite mailbox.
try:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    def argon(password, salt, m, t, p):
        return Argon2id(salt=salt, length=32, iterations=t, lanes=p, memory_cost=m).derive(password)
    p_secret = argon(vt("passphrase.text").encode(), vb("passphrase.salt"), vu("passphrase.memory_kib"),
                     vu("passphrase.iterations"), vu("passphrase.parallelism"))
    check("passphrase.secret", p_secret)
    check("passphrase.group_id", pub(hkdf(p_secret, b"0k-sync/v1/auth-seed")))
    i = "invite.passphrase."
    check(i + "secret", argon(vt(i + "passphrase").encode(), vb(i + "salt"), vu(i + "memory_kib"),
                              vu(i + "iterations"), vu(i + "parallelism")))
    m_salt = hashlib.sha256(b"0k-sync/v1/mailbox" + vt("mailbox.lookup_id").encode()).digest()[:16]
    check("mailbox.salt", m_salt)
    m_key = argon(vt("mailbox.key_half").encode(), m_salt, 19 * 1024, 2, 1)
    check("mailbox.key", m_key)
    m_nonce = vb("mailbox.nonce")
    check("mailbox.sealed", m_nonce + xchacha_encrypt(m_key, m_nonce, vb("mailbox.plaintext"), b"0k-sync/v1/mailbox-seal"))
except ImportError as e:
    print("argon2 unavailable:", e)

unread = sorted(set(V) - used)
for name in unread: print("UNCHECKED", name)
print(f"docs/PROTOCOL.md: {len(used) - len(mismatches)} of {len(V)} vectors agree")
# The known-answer values of src/kat_tests.rs, as the Rust tests hold them.
import os, re
rust = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "kat_tests.rs")).read()
consts = {m.group(1): re.sub(r"\\\n\s*", "", m.group(2))
          for m in re.finditer(r'const (\w+): &str =\s*"((?:[^"\\]|\\\n)*)"', rust)}
names = {"sync_key": "SYNC_KEY", "group_id": "GROUP_ID", "content": "CONTENT_KEY",
         "device_id": "DEVICE_ID", "hello_sig": "HELLO_SIG", "sealed": "SEALED",
         "sealed_v1": "SEALED_V1", "pass_secret": "PASSPHRASE_SECRET", "mailbox": "MAILBOX_KEY",
         "kem_x25519_pk": "KEM_X25519_PK", "kem_mlkem_ek_sha256": "KEM_MLKEM_EK_SHA256",
         "envelope_sha256": "ENVELOPE_SHA256", "envelope_prefix": "ENVELOPE_PREFIX"}
kat_bad = []
for ours, theirs in names.items():
    if ours not in KAT:
        kat_bad.append(ours); print("UNCHECKED kat", ours)
    elif consts.get(theirs) != KAT[ours]:
        kat_bad.append(ours); print("MISMATCH kat", ours, "rust:", consts.get(theirs))
print(f"src/kat_tests.rs: {len(names) - len(kat_bad)} of {len(names)} known-answer values agree")
sys.exit(1 if mismatches or unread or kat_bad else 0)
