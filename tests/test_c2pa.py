"""C2PA Content Credentials: manifests signed in the test by a chain it makes (ES256, end-entity
plus root); a generated claim decides, a capture claim decides `real` only for a trusted signer,
a manifest whose image was changed after signing never decides."""
import datetime
import io
import json

import c2pa
import numpy as np
import pytest
from cryptography import x509
from PIL import Image

from zoomin_core import ImageInput, load_backend, run_chain
from zoomin_core.decode import DecodeConfig, prepare
from zoomin_core.stages import ExamineConfig

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@pytest.fixture(scope="module")
def chain():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zoomin test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    rk, ek = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, issuer, key, serial, ca):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(key.public_key())
             .serial_number(serial).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if ca:
            return b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        return (b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(rk.public_key()), critical=False))
    root = cert("root", "root", rk, 1, True).sign(rk, hashes.SHA256())
    ee = cert("signer", "root", ek, 2, False).sign(rk, hashes.SHA256())
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    key = ek.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=pem(ee) + pem(root), private_key=key,
                                                       ta_url=None))
    return signer, pem(root).decode()


def plain_jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((200, 260, 3)) * 255).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def signed(chain, term: str, seed: int = 0) -> bytes:
    manifest = {"claim_generator_info": [{"name": "testgen", "version": "1.0"}], "title": "x.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": DST + term}]}}]}
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(chain[0], "image/jpeg", io.BytesIO(plain_jpeg(seed)), out)
    return out.getvalue()


def marks(data: bytes, trust=None):
    p = prepare(ImageInput("x.jpg", data), DecodeConfig(c2pa_trust=trust))
    assert p.status == "ok", p.error
    return [(m.signal, m.says) for m in p.provenance], p


def test_claims_signers_and_trust(chain):
    assert marks(signed(chain, "trainedAlgorithmicMedia"))[0] == [("c2pa", "generated")]
    assert marks(signed(chain, "compositeWithTrainedAlgorithmicMedia"))[0] == [("c2pa", "composite")]
    assert marks(signed(chain, "digitalCapture"))[0] == [("c2pa", "capture")]
    assert marks(signed(chain, "digitalCapture"), trust=chain[1])[0] == [("c2pa_trusted", "capture")]
    assert marks(plain_jpeg())[0] == []   # the same kind of pixels, no manifest: the models decide


def test_a_manifest_whose_image_changed_after_signing_never_decides(chain):
    data = bytearray(signed(chain, "trainedAlgorithmicMedia"))
    sos = data.rfind(b"\xff\xda")
    data[sos + 400] ^= 0x55   # a byte of the compressed pixels: still a JPEG, no longer the signed one
    got, p = marks(bytes(data))
    assert got == [("c2pa", "unknown")] and "never trusted" in p.provenance[0].detail


def test_rows_decided_by_c2pa(chain):
    items = [ImageInput("gen.jpg", signed(chain, "trainedAlgorithmicMedia")),
             ImageInput("cap.jpg", signed(chain, "digitalCapture", seed=1))]
    untrusted = run_chain(load_backend("fake"), items)
    assert [(r.verdict, r.decided_by) for r in untrusted] == [("generated", "provenance"), (untrusted[1].verdict, "fake")]
    trusted = run_chain(load_backend("fake"), items, ExamineConfig(decode=DecodeConfig(c2pa_trust=chain[1])))
    assert [(r.verdict, r.score, r.decided_by) for r in trusted] == [("generated", 1.0, "provenance"),
                                                                     ("real", 0.0, "provenance")]
    assert "trusted signer" in trusted[1].rationale
