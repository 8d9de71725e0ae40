"""Independent cross-check of the sync-crypto known-answer values (src/kat_tests.rs).

Uses only Python `cryptography` (>= 44, for Argon2id): HKDF-SHA256, Ed25519, Argon2id, and
ChaCha20-Poly1305 with a hand-written HChaCha20 for XChaCha20-Poly1305. Prints the same
name/hex lines as the Rust KATs; run `python3 crates/sync-crypto/kat/crosscheck.py` and compare.
"""
import hashlib, struct
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

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
print("sync_key",sync_key.hex()); print("group_id",gid.hex()); print("content",content.hex()); print("device_id",did.hex())
ch=b"0k-sync/v1/hello"+b"\x11"*32+b"\x22"*32+did+gid
print("hello_sig",sign(auth_seed,ch).hex())
nonce=seq(24,0x40); epoch=struct.pack('>I',0)
aad=b"\x01"+gid+did+blob+epoch
ct=xchacha_encrypt(sync_key,nonce,b"hello 0k-sync",aad)
body=b"\x01"+epoch+did+nonce+ct
sig=sign(dseed,b"0k-sync/v1/seal-sig"+gid+blob+body)
print("sealed",(body+sig).hex())
try:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    a=Argon2id(salt=seq(16,0x10),length=32,iterations=2,lanes=1,memory_cost=19*1024)
    print("pass_secret",a.derive(b"correct horse battery staple").hex())
    salt=hashlib.sha256(b"0k-sync/v1/mailbox"+b"ABCDEFGH").digest()[:16]
    a=Argon2id(salt=salt,length=32,iterations=2,lanes=1,memory_cost=19*1024)
    print("mailbox",a.derive(b"IJKLMNOP").hex())
except Exception as e: print("argon2 unavailable:",e)
