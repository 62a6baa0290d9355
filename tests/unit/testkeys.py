"""Fixed RSA test keys (never used outside the tests) and a signer in plain integers, so the unit tests
sign on MicroPython as well as on CPython: s = EM^d mod n by the Chinese remainder theorem.

    sig = sign(KEY_A, message)              # RSASSA-PKCS1-v1_5, SHA-256, k bytes
    key = KEY_A.public                      # what a charger holds
"""
import hashlib

from firmware.core.rsa import PublicKey, encode


class Key:
    def __init__(self, p, q, dp, dq, qinv):
        self.p, self.q, self.dp, self.dq, self.qinv = p, q, dp, dq, qinv
        self.n = p * q
        self.k = len("%x" % self.n) // 2
        self.public = PublicKey(self.n, self.k)
        self.hex = "%x" % self.n

    def raw(self, m):
        """m^d mod n: the private-key operation on an integer below n."""
        m1 = pow(m % self.p, self.dp, self.p)
        m2 = pow(m % self.q, self.dq, self.q)
        return m2 + (self.qinv * (m1 - m2) % self.p) * self.q

    def sign_em(self, em):
        """A "signature" that opens to exactly em (any k bytes): for checking the verifier's structure checks."""
        return self.raw(int.from_bytes(em, "big")).to_bytes(self.k, "big")


def sign(key, message):
    return key.sign_em(encode(hashlib.sha256(message).digest(), key.k))


KEY_A = Key(  # RSA-2048
    p=int(
    "ed7ddc1a02544abd2c3f46210bf236e8cf893af453c0fc49de5127947e8c668d2534cdabb0940b37f01374d61b650db8"
    "9cebe142eec738b3b7512c65028a052ded9673617eafe90fdf19613803627b69540047b693753457dfa37b5f5425ea9d"
    "043921357993c810d40079fc65217ca68e16d20bfccef9ba0c7192412aff7e8f", 16),
    q=int(
    "c7639a92e8fc41791f5a0ec82b54dd388b4e11774c8a1ba080faf8b3f1f19518a633955628fbc2861d22f04de6e36a34"
    "9dab9f43d9bab16a63acbdd680813bde06df3edd25f94224d08d44bcc114ed8642624c9c4e33392c36aaaaa9d1fbeb1e"
    "7b7dff30b516639deadb29977e8619a0a410247f676e17f07d49f7664bea153f", 16),
    dp=int(
    "3f94473d6b4c37aa07537529d9b1e18358342be5471ace2fd465b38bec8917d74793a8500378cebc0df89779ce61b257"
    "af22f2ee6150525cc281e7b9af01563ba27479b52b1e5aed95d38c945b4b9d30687d9eb5412aca758ff88b49cd144d87"
    "f59e79c68022d117b839dc6e76808d876558b4a8e2e86230adae25f26e5971ff", 16),
    dq=int(
    "a22675817dea0f90e2174a282d5d119f3762e0bf6546779b3ae95f326fd3288e6833510245c8207512e2e40c6675915c"
    "82d11c6f8074dc6d89ebe462ba14df4bfbc8b805ff28cb4ac733ebaf99525cac2ff66319465b4fe68dfa935a11c3ce7c"
    "f6af0bc65fae7a8ae581203cec8f3fee2d1e57a028cc16b9e41a3011483170df", 16),
    qinv=int(
    "2b0f9b41e7e906205e94db3dac399cbc5fc0c8a780f6442eb99e5103e8314c91323a157b5a3d405ba3e09c6532bdf562"
    "4c08f972b5296406462ab81ab1e9dc17647f7b9f0bbfbfeed425f8500261e0a2d45995b16f028c63577f3984f1f18b20"
    "1c7e18a2b3c35df010792ce4824fd1ed4c1e59e9dbe0d10893e3fbe026e1a895", 16))


KEY_B = Key(  # RSA-2048
    p=int(
    "f9c59e351835f62434aaaba5ea61b5e3421149f48116f91243040745d08b5d94f027bd15fa5664af17ac19cfcdd44e8c"
    "ef9028a135108860195ceb4fd92e5b9237321a732636b9df6b7c50f33f5afcedf3ad70374ca0812c72f0b1f80fe19d1b"
    "50df7e7de55a3dbb596dbc87591f824924547b0b901477e16f0c80fdab7c757f", 16),
    q=int(
    "ef5046906f5f61a54b08ab12b28d772cedf7352aaab9e52b3f145c118fd75cc6cc0084305badccc7f20123c7e2abf9f9"
    "91f36e9abce0b106d82142fc608f79f46e6d26c600168ff3a7a8c5c3df387859adb17bef7e6daf81f2d33e9bf4351a21"
    "094349f5d93d94bdae5833c108e740b9bf0640b506bf67eb538ce851f84c995b", 16),
    dp=int(
    "7fdf3c6fd2454e0e9b2805589bf60a389eca5b22623470af78bfc73966daf2be1d753ac8d5b1053aded3ad23462d3b49"
    "cc1bf1b11689b04802b41f84719bda25b13c656e2e523636bbc09970ef2e95eefca1fea151099b183680239cec04857a"
    "469d25152f265414666457f0b31ffe8393a5ec98aedacbc50e2548a495f6d1f", 16),
    dq=int(
    "b6f1b33fef24074d8912d354b3d2996c6b6e33e2ae28f61c1d58bf195dd0d147d7e3fd29caac0e843b68cba59e8ec1c6"
    "1be0f088b22342b16cbfe0a97657b86f378b91bc838cbbf714105d3ee38213deda7d77b519fd57d20b8399b536f6f146"
    "98022ca418b28ee68245432b2a573e8fc08c532310497a73d7a73c628d626149", 16),
    qinv=int(
    "2259cd98f348251735aa903daf06c6556ca3dd757587790303b24b672bc019b086e3d04a69f7e3a2dc903c0f1815ad84"
    "b290e1bf5e09f0433f1df79703046adfd5c570b650b16181c8ab46b2e205e304783400cf1470db0cb0298972544b1fbc"
    "6e56e245c75a5770d03a444707fcca2bae944a145a14b9607f43242d2492521d", 16))


KEY_C = Key(  # RSA-3072
    p=int(
    "f5368c4a586bc6ba6c4ff793204bc7f34da92926a2bb32415e1a62d1650e7011ce3036b49c4ca2818c9d87bb80d1087c"
    "52d5708e70c4a2d614aefb5368ecf15eefaf8b8edb392e9f37480eb36b871975bf41e1c930f9daf6429bc0157a031c62"
    "77d05a5819ca851a9ad33df1ea32586db3390152ac6fbd8153d78b06fce48d87caef5e4598e452aa9d55bada0cbb00a7"
    "68a9af1225081312c9a7d156b9bbed9c24a7065ec0e645e82264a59af3ffb6a352bbf01dd0dd09d07d26720dcfe9bd8b", 16),
    q=int(
    "ef38b5a333303de62f72e91aa054d00def5c798dc0db0e14ab172e98147f48d7feb82479bc510b335920b2bee8c8ac8a"
    "fbe65e2e7b24d7128f388d0f72fed0b85d8cf981fbf0a8d013cb39e584bff7ce4462510458d953851e6e1e1e8c273644"
    "a6b92ff860ada75c39e5178975190770b704badfbc7ac44cb3b55109bf2333990336313ca5eb5b43c6b4314b12d3589d"
    "a81f81bd0a7508b4df72045fb1684df7983fd47fa6114aa5ce1f3f30cc9cb8c9bb5aaf8dfbaab59b26395ebaeae981fb", 16),
    dp=int(
    "917a2037074841a95e12ff3d611eb46c8b397db97737f9f3c0018578d72c7e9e81a626fe75f01d45208860fb83cbffed"
    "ca32e8c908ec0ff354680fa10791f30d30c403d6e8067fbb63cfb3310ced24d4af78459cd81a93a62014491c34bbddbe"
    "297909f054b4cacce2e7ca4b58772ff13d2fe7b205ad714f65cf6da2e2ac31af4b5d419fa6ba66b4e40cf582e1a49c19"
    "b5c55da135291a2fbe457ab3aa136d3f829b38f3441c198343cc54579ec4a9b531a3602c403ab2d4e73ac4d59ef0fc4b", 16),
    dq=int(
    "8e76724d77ad921f644085abd2b1cf998ce3c08bf7bf3cba784d7cf51ab7d6b4b3400c90e6e248ce5294d37e37f95230"
    "0ee5d94ecb0d5c7bf40914908fc64a9c9131e461519db79afb3ebb0301b4a52a14b58c540f699580a067a9ce3d5f18c5"
    "7798af85b6659456ab2fd07d8edbd1ff812ef2ef4d3abb6e865343a88f48b270bc65e89a9aa0f81ffbd4d1ca48b2ce82"
    "4d5e3e104b8af91d66386b7c65959d61072d742a74c6b572dab6e715f3b49da39dccdae1ae6fb2696c311c462aa1d743", 16),
    qinv=int(
    "d1165055fbded8d5ba48d4fb75c41b0ed1495f6ef8fbcb4f623bb77afbdc281272334e4121ed35740c9271f3b0def835"
    "e18b0cd097c15e58a6ca8482a6e2148d177b16afdb86f71ca8f253dd93d801c8a97fa765e4547b891daba2486a9d866c"
    "35ab174d0c2ecd8bc25a060557f6be7c0438faa406024feae8396cff1bae4f6faa64ece9cc324d0c388d7fa691fe4ed4"
    "3638c0da670b923c250cbbc5da264a2c8fd8d7616a06405eb1e21df21e9b6dfc7f1c8bf30df9a04a58b06e36d2866b4e", 16))


KAT_MESSAGE = b'cp-update test vector: RSASSA-PKCS1-v1_5 SHA-256'
KAT_SIG_A = (  # by the `cryptography` package (OpenSSL), not by this module's sign()
    "0fed725af6b91dfd18997998e4640811941930fc15ca279c631ab36a57b43ca2a21a7f5d4783df953b2cc9c56397daad"
    "b2417583b6b2caa7e125aecd5f99951c9fbfc0aac91c2f9df9aff19a46a7a6f6903200dc36a4e2bd435a36277760a528"
    "7f7989580c13898f498c3c2211e2a0e88627f277f174fb48470db96693578408f6cc133fbc38a43146a722b34ed72103"
    "f6e52b0934dd9b9f16d3f8213f02c16cc8a94825a67b5f1207a7ea533bd4dd1f0e4297c07a2202550d2dfb0edb77df91"
    "8e619ee1163738da283ffd8f9500615f773bff35007873b8736475236bf59a4b7fcb95473c03228705643450b5d952d1"
    "b7aaa58d4ad5e4a0c523eec5ca0b48ee")
