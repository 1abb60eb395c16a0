"""Image references in the one form the Engine resolves them to, for comparison."""

from __future__ import annotations


def normalize_image_ref(ref: str) -> str:
    """`nginx` -> `docker.io/library/nginx:latest`, as the Engine resolves references.

    A reference is compared with another only in this form (the Engine reports
    `randomuser/miner:latest` for `docker.io/randomuser/miner`). Image ids
    (`sha256:…`) are returned unchanged.
    """
    if ref.startswith("sha256:"):
        return ref
    name, at, digest = ref.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        repo, tag = name[:colon], name[colon + 1 :]
    else:
        repo, tag = name, "" if at else "latest"
    first, sep, rest = repo.partition("/")
    is_domain = sep and (any(c in first for c in ".:") or first == "localhost" or
                         first.lower() != first)  # fmt: skip
    domain, path = (first, rest) if is_domain else ("docker.io", repo)
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    text = f"{domain}/{path.lower() if domain == 'docker.io' else path}"
    return text + (f":{tag}" if tag else "") + (f"@{digest}" if at else "")
