"""Install the micropython-lib modules the firmware imports (umqtt.simple, urequests) into lib/.

They are published on the package index as sdists without setup.py, which pip refuses to
install, so this asks pip's own configuration which index to use, downloads the pinned file,
checks its sha256 against lib.lock.json and extracts only the listed modules.

    python3 tools/fetch_lib.py            # idempotent: does nothing when lib/ is current
    python3 tools/fetch_lib.py --force    # fetch again
"""
import argparse
import hashlib
import html.parser
import io
import json
import os
import re
import ssl
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(ROOT, "lib.lock.json")
LIB = os.path.join(ROOT, "lib")
STAMP = os.path.join(LIB, ".lock.sha256")


class FetchError(Exception):
    pass


def pip_config():
    """pip's effective settings as {key: value}, later sources (env) overriding earlier ones."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=False).stdout
    conf = {}
    order = {"global": 0, "user": 1, "site": 2, ":env:": 3}
    found = []
    for line in out.splitlines():
        m = re.match(r"^([^.]+|:env:)\.([\w-]+)='(.*)'$", line.strip())
        if m:
            found.append((order.get(m.group(1), 0), m.group(2), m.group(3)))
    for _, key, value in sorted(found, key=lambda f: f[0]):
        conf[key] = value
    return conf


def index_urls(conf):
    """The indexes pip would search, in pip's order: index-url (or pip's default), then extras."""
    main = conf.get("index-url")
    if not main:
        probe = "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"
        main = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              check=True).stdout.strip()
    return [main] + conf.get("extra-index-url", "").split()


def normalize(project):
    return re.sub(r"[-_.]+", "-", project).lower()


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _open(url, context):
    parts = urllib.parse.urlparse(url)
    if parts.scheme == "file":
        path = urllib.request.url2pathname(parts.path)
        if os.path.isdir(path):
            path = os.path.join(path, "index.html")
        with open(path, "rb") as f:
            return f.read()
    with urllib.request.urlopen(url, timeout=60, context=context) as r:
        return r.read()


def find_file(indexes, project, filename, context):
    """URL of `filename` on the first index that lists it."""
    tried = []
    for index in indexes:
        page = index.rstrip("/") + "/" + normalize(project) + "/"
        try:
            text = _open(page, context).decode("utf-8", "replace")
        except (OSError, ValueError) as e:
            tried.append("%s (%s)" % (page, e))
            continue
        parser = _Links()
        parser.feed(text)
        for href in parser.links:
            url = urllib.parse.urljoin(page, href)
            if urllib.parse.unquote(urllib.parse.urlparse(url).path).endswith("/" + filename):
                return url.split("#")[0]
        tried.append("%s (no %s)" % (page, filename))
    raise FetchError("%s not found on any configured index:\n  %s" % (filename, "\n  ".join(tried)))


def install(pkg, indexes, context):
    url = find_file(indexes, pkg["project"], pkg["filename"], context)
    data = _open(url, context)
    digest = hashlib.sha256(data).hexdigest()
    if digest != pkg["sha256"]:
        raise FetchError("%s: sha256 %s does not match the pin %s in lib.lock.json"
                         % (pkg["filename"], digest, pkg["sha256"]))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        for src, dst in pkg["modules"].items():
            m = members.get(src)
            if m is None or not m.isfile():
                raise FetchError("%s has no %s" % (pkg["filename"], src))
            target = os.path.join(LIB, *dst.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(tar.extractfile(m).read())
    print("lib/: %s %s (sha256 ok)" % (pkg["project"], pkg["version"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python3 tools/fetch_lib.py --force")
    ap.add_argument("--force", action="store_true", help="fetch even when lib/ is current")
    args = ap.parse_args()
    with open(LOCK, "rb") as f:
        raw = f.read()
    want = hashlib.sha256(raw).hexdigest()
    if not args.force and os.path.exists(STAMP) and open(STAMP).read().strip() == want:
        return 0
    conf = pip_config()
    context = ssl.create_default_context(cafile=conf.get("cert") or None)
    indexes = index_urls(conf)
    try:
        for pkg in json.loads(raw)["packages"]:
            install(pkg, indexes, context)
    except FetchError as e:
        print("fetch_lib: %s" % e, file=sys.stderr)
        return 1
    with open(STAMP, "w") as f:
        f.write(want + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
