"""The test Hub server, driven by the real huggingface_hub client (no mocks of the client).

These tests pin down two things at once: that the server answers the way the Hub does for the
calls our product makes, and how huggingface_hub 2.4.0 itself behaves on those answers (which
exceptions it raises, what it retries, when it skips a commit). The latter is what product
code has to be written against, so the assertions are deliberately explicit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hubserver import PARENT_MISMATCH_MESSAGE, HubServer, git_blob_sha

README = """---
library_name: peft
base_model: org/base
tags:
- lora
---
# Adapter

Some text.
"""
CONFIG = json.dumps({"r": 16, "lora_alpha": 32, "peft_type": "LORA"})
REPO = "alice/adapter"


@pytest.fixture
def repo(hub_client_env: HubServer) -> HubServer:
    """A public adapter repo owned by alice; yields the server (the client points at it)."""
    hub_client_env.create_repo(
        REPO,
        {
            "README.md": README,
            "adapter_config.json": CONFIG,
            "adapter_model.safetensors": b"\x00\x01weights",
            "extra/notes.txt": "notes",
        },
    )
    return hub_client_env


def _add(path: str, content: str | bytes) -> CommitOperationAdd:
    data = content.encode() if isinstance(content, str) else content
    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)


# -- read side ---------------------------------------------------------------------------------


def test_whoami_reports_user_and_token_role(hub_client_env: HubServer) -> None:
    me = HfApi().whoami()
    assert me["name"] == "alice"
    assert me["auth"]["accessToken"]["role"] == "write"
    assert HfApi(token="hf_bob_read_token").whoami()["auth"]["accessToken"]["role"] == "read"
    # The module-level helper is a bound method of an HfApi created at import: it must follow.
    import huggingface_hub

    assert huggingface_hub.whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(token="hf_not_a_token").whoami()
    assert info.value.response.status_code == 401


def test_model_info_fields_and_revisions(repo: HubServer) -> None:
    first = repo.head_sha(REPO)
    second = repo.push(REPO, {"new.txt": "x"})
    api = HfApi()

    info = api.model_info(REPO)
    assert info.id == REPO
    assert info.sha == second
    assert info.private is False and info.gated is False and info.disabled is False
    assert info.library_name == "peft"
    assert "lora" in info.tags
    assert info.card_data.base_model == "org/base"
    assert info.last_modified is not None
    assert {s.rfilename for s in info.siblings} == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "extra/notes.txt",
        "new.txt",
    }

    # Full sha, short sha and branch name all resolve; the answer describes that commit.
    for rev in (first, first[:7], "main"):
        assert api.model_info(REPO, revision=rev).sha == (second if rev == "main" else first)
    assert "new.txt" not in {s.rfilename for s in api.model_info(REPO, revision=first).siblings}


def test_snapshot_download_allow_patterns_at_short_sha(repo: HubServer) -> None:
    first = repo.head_sha(REPO)
    repo.push(REPO, {"adapter_config.json": '{"r": 4}', "later.json": "{}"})
    repo.clear_requests()

    path = snapshot_download(REPO, revision=first[:7], allow_patterns=["*.json", "*.md"])

    # The short sha is resolved by the server (model_info), then everything uses the full sha.
    assert path.endswith(first)
    got = sorted(p.relative_to(path).as_posix() for p in Path(path).rglob("*") if p.is_file())
    assert got == ["README.md", "adapter_config.json"]
    assert (Path(path) / "adapter_config.json").read_text() == CONFIG
    tree = repo.requests_to(r"/tree/")
    assert len(tree) == 1 and tree[0].query["recursive"].lower() == "true"
    # Filtered-out files are never fetched.
    assert not repo.requests_to(r"safetensors|notes")
    assert repo.write_requests() == []


def test_tree_listing_pages_with_link_header(repo: HubServer) -> None:
    repo.tree_page_size = 2
    files = list(HfApi().list_repo_tree(REPO, recursive=True))
    assert {f.path for f in files} == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "extra",
        "extra/notes.txt",
    }
    notes = next(f for f in files if f.path == "extra/notes.txt")
    assert notes.blob_id == git_blob_sha(b"notes") and notes.size == 5
    pages = repo.requests_to(r"/tree/")
    assert len(pages) == 3 and "cursor" in pages[1].query
    # Non-recursive lists one level; a sub-path lists inside it.
    top = {f.path for f in HfApi().list_repo_tree(REPO)}
    assert "extra" in top and "extra/notes.txt" not in top
    assert [f.path for f in HfApi().list_repo_tree(REPO, path_in_repo="extra")] == [
        "extra/notes.txt"
    ]


def test_hf_hub_download_branch_pr_ref_and_headers(repo: HubServer) -> None:
    num = repo.open_pr(REPO, {"README.md": "changed"}, author="alice")
    local = hf_hub_download(REPO, "README.md")
    assert Path(local).read_text() == README
    pr_local = hf_hub_download(REPO, "README.md", revision=f"refs/pr/{num}")
    assert Path(pr_local).read_text() == "changed"
    # The client quotes the revision with safe="": the server must accept refs%2Fpr%2F1.
    head = repo.requests_to(r"resolve/refs/pr/", method="HEAD")
    assert head and "refs%2Fpr%2F" in head[0].raw_path
    # ModelCard.load goes through constants.ENDPOINT, not an HfApi instance.
    assert ModelCard.load(REPO).data.library_name == "peft"


def test_read_errors_map_to_typed_client_exceptions(hub_client_env: HubServer) -> None:
    server = hub_client_env
    server.add_user("carol", "hf_carol_write_token")
    server.create_repo("alice/secret", {"f.txt": "s"}, private=True)
    server.create_repo("alice/gated", {"f.txt": "g"}, gated=True)
    server.create_repo("alice/open", {"f.txt": "o"})
    api = HfApi()

    # Private: anonymous -> 401, another user -> 404; both are RepositoryNotFoundError.
    with pytest.raises(RepositoryNotFoundError) as anon:
        api.model_info("alice/secret", token=False)
    assert anon.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as other:
        hf_hub_download("alice/secret", "f.txt", token="hf_carol_write_token")
    assert other.value.response.status_code == 404
    assert api.model_info("alice/secret").private is True

    # Gated: metadata is public, files are not. GatedRepoError subclasses RepoNotFound.
    assert api.model_info("alice/gated", token=False).gated == "auto"
    with pytest.raises(GatedRepoError):
        hf_hub_download("alice/gated", "f.txt", token=False)
    with pytest.raises(GatedRepoError) as gated:
        snapshot_download("alice/gated", token="hf_carol_write_token")
    assert gated.value.response.status_code == 403
    server.grant_gated_access("alice/gated", "carol")
    assert (
        Path(hf_hub_download("alice/gated", "f.txt", token="hf_carol_write_token")).read_text()
        == "g"
    )

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/missing")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("alice/missing")

    for call in (
        lambda: api.model_info("alice/open", revision="nope"),
        lambda: hf_hub_download("alice/open", "f.txt", revision="nope"),
        lambda: snapshot_download("alice/open", revision="refs/pr/9"),
    ):
        with pytest.raises(RevisionNotFoundError):
            call()

    with pytest.raises(RemoteEntryNotFoundError) as missing:
        hf_hub_download("alice/open", "absent.txt")
    assert isinstance(missing.value, EntryNotFoundError)
    assert missing.value.response.headers["X-Repo-Commit"] == server.head_sha("alice/open")
    assert api.file_exists("alice/open", "f.txt") and not api.file_exists("alice/open", "nope")


# -- write side --------------------------------------------------------------------------------


def test_create_commit_direct(repo: HubServer) -> None:
    parent = repo.head_sha(REPO)
    info = HfApi().create_commit(
        REPO,
        [_add("README.md", README + "\nMore.\n"), CommitOperationDelete("extra/notes.txt")],
        commit_message="Update card",
        commit_description="why",
        parent_commit=parent,
    )
    assert info.oid == repo.head_sha(REPO) != parent
    assert info.pr_url is None
    assert info.commit_url == f"{repo.url}/{REPO}/commit/{info.oid}"
    assert repo.read(REPO, "README.md").endswith(b"More.\n")
    assert repo.read(REPO, "extra/notes.txt") is None
    last = repo.commits(REPO)[0]
    assert (last.title, last.message, last.author, last.parents) == (
        "Update card",
        "why",
        "alice",
        [parent],
    )
    # README.md in a commit makes the client validate its YAML first.
    assert [r.path for r in repo.write_requests()] == [
        "/api/validate-yaml",
        f"/api/models/{REPO}/preupload/main",
        f"/api/models/{REPO}/commit/main",
    ]
    assert [r.path for r in repo.mutations()] == [f"/api/models/{REPO}/commit/main"]
    body = repo.mutations()[0].ndjson()
    assert body[0] == {
        "key": "header",
        "value": {"summary": "Update card", "description": "why", "parentCommit": parent},
    }
    assert repo.mutations()[0].headers["Authorization"] == "REDACTED"


def test_create_pr_then_commit_to_pr_ref_extends_it(repo: HubServer) -> None:
    api = HfApi()
    main_before = repo.head_sha(REPO)
    first = api.create_commit(
        REPO, [_add("gradience/audit.json", "{}")], commit_message="Add audit", create_pr=True
    )
    assert (first.pr_num, first.pr_revision) == (1, "refs/pr/1")
    assert first.pr_url == f"{repo.url}/{REPO}/discussions/1"
    assert repo.head_sha(REPO) == main_before  # main untouched

    second = api.create_commit(
        REPO,
        [_add("gradience/audit.json", '{"v": 2}')],
        commit_message="Refresh audit",
        revision=first.pr_revision,
        parent_commit=first.oid,
    )
    assert second.pr_url is None  # not create_pr: the client does not report the PR again
    (pr,) = repo.prs(REPO)
    assert pr.num == 1 and pr.status == "open" and pr.author == "alice"
    assert pr.head == second.oid == repo.head_sha(REPO, "refs/pr/1")
    assert [e.data["subject"] for e in pr.commit_events()] == ["Add audit", "Refresh audit"]

    details = api.get_discussion_details(REPO, 1)
    assert details.is_pull_request and details.target_branch == "refs/heads/main"
    assert details.conflicting_files == []
    assert "b/gradience/audit.json" in details.diff and '+{"v": 2}' in details.diff
    assert details.git_reference == "refs/pr/1"
    # History of the PR ref: its commits, then main's (what tools use to find the fork point).
    commits = api.list_repo_commits(REPO, revision="refs/pr/1")
    assert [c.commit_id for c in commits[:3]] == [second.oid, first.oid, main_before]
    refs = api.list_repo_refs(REPO, include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", second.oid)]


def test_stale_parent_commit_is_rejected_with_412(repo: HubServer) -> None:
    api = HfApi()
    stale = repo.head_sha(REPO)
    concurrent = repo.push(REPO, {"README.md": "someone else"}, author="alice")
    with pytest.raises(HfHubHTTPError) as info:
        api.create_commit(REPO, [_add("x.txt", "x")], commit_message="mine", parent_commit=stale)
    assert info.value.response.status_code == 412
    assert PARENT_MISMATCH_MESSAGE in str(info.value)
    assert repo.head_sha(REPO) == concurrent and repo.mutations() == []

    # With create_pr the PR branches from parent_commit, so it sees the concurrent change as
    # a conflict instead of overwriting it.
    pr = api.create_commit(
        REPO,
        [_add("README.md", "---\nlicense: mit\n---\nmine")],
        commit_message="mine",
        parent_commit=stale,
        create_pr=True,
    )
    assert repo.discussion(REPO, pr.pr_num).fork_point == stale
    assert api.get_discussion_details(REPO, pr.pr_num).conflicting_files == ["README.md"]


def test_unchanged_files_are_skipped_and_no_commit_is_made(repo: HubServer) -> None:
    head = repo.head_sha(REPO)
    info = HfApi().create_commit(
        REPO,
        [_add("adapter_config.json", CONFIG)],
        commit_message="no-op",
        create_pr=True,
        parent_commit="0" * 40,  # never sent: there is no commit to send it with
    )
    # The preupload answer carried the current oid, so the client dropped the file, made no
    # commit, opened no PR, and returned the current head of the revision instead.
    assert info.oid == head and info.pr_url is None and info.pr_num is None
    assert repo.requests_to(r"/preupload/") and not repo.requests_to(r"/commit/")
    assert repo.mutations() == [] and repo.prs(REPO) == []


def test_write_permissions(repo: HubServer) -> None:
    repo.add_user("carol", "hf_carol_write_token")
    ops = [_add("x.txt", "x")]
    with pytest.raises(HfHubHTTPError) as anon:
        HfApi(token=False).create_commit(REPO, ops, commit_message="x")
    assert anon.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as reader:
        HfApi(token="hf_bob_read_token").create_commit(REPO, ops, commit_message="x")
    assert reader.value.response.status_code == 403
    carol = HfApi(token="hf_carol_write_token")
    with pytest.raises(HfHubHTTPError) as not_owner:
        carol.create_commit(REPO, ops, commit_message="x")
    assert not_owner.value.response.status_code == 403
    # ...but any write token may open a PR, and push to its own PR ref.
    pr = carol.create_commit(REPO, ops, commit_message="x", create_pr=True)
    carol.create_commit(REPO, [_add("y.txt", "y")], commit_message="y", revision=pr.pr_revision)
    with pytest.raises(HfHubHTTPError) as bob_push:
        HfApi(token="hf_bob_read_token").create_commit(
            REPO, [_add("z.txt", "z")], commit_message="z", revision=pr.pr_revision
        )
    assert bob_push.value.response.status_code == 403
    assert len(repo.mutations()) == 2


def test_create_repo_endpoint(hub_client_env: HubServer) -> None:
    api = HfApi()
    url = api.create_repo("alice/fresh", private=True)
    assert url.repo_id == "alice/fresh"
    assert hub_client_env.files("alice/fresh") == {
        ".gitattributes": hub_client_env.read("alice/fresh", ".gitattributes")
    }
    assert api.model_info("alice/fresh").private is True
    assert api.create_repo("alice/fresh", exist_ok=True).repo_id == "alice/fresh"
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("alice/fresh")
    assert info.value.response.status_code == 409


# -- discussions -------------------------------------------------------------------------------


def test_find_own_open_pr_among_discussions(repo: HubServer) -> None:
    repo.add_user("carol", "hf_carol_write_token")
    repo.open_discussion(REPO, "A question", author="carol")
    mine = repo.open_pr(REPO, {"a.txt": "a"}, author="alice", title="gradience: audit")
    repo.open_pr(REPO, {"b.txt": "b"}, author="carol", title="carol's PR")
    closed = repo.open_pr(REPO, {"c.txt": "c"}, author="alice", title="old")
    repo.set_discussion_status(REPO, closed, "closed", author="alice")
    repo.discussions_page_size = 2  # force the client to page

    found = list(
        HfApi().get_repo_discussions(
            REPO, author="alice", discussion_type="pull_request", discussion_status="open"
        )
    )
    assert [(d.num, d.title, d.is_pull_request, d.status) for d in found] == [
        (mine, "gradience: audit", True, "open")
    ]
    everything = [d.num for d in HfApi().get_repo_discussions(REPO)]
    assert everything == [4, 3, 2, 1]  # newest first, across pages
    assert found[0].git_reference == f"refs/pr/{mine}"


def test_comment_edit_status_round_trip(repo: HubServer) -> None:
    repo.add_user("carol", "hf_carol_write_token")
    api = HfApi()
    created = api.create_pull_request(REPO, "Draft PR", description="desc")
    assert created.status == "draft" and created.git_reference == f"refs/pr/{created.num}"
    assert created.events[0].content == "desc"  # the description is the first comment

    comment = api.comment_discussion(REPO, created.num, "<!-- sticky -->\nfirst")
    assert comment.author == "alice" and not comment.edited
    edited = api.edit_discussion_comment(REPO, created.num, comment.id, "<!-- sticky -->\nsecond")
    assert edited.content == "<!-- sticky -->\nsecond" and edited.edited

    # Only the author may edit; a read-only token may not even try.
    for token in ("hf_carol_write_token", "hf_bob_read_token"):
        with pytest.raises(HfHubHTTPError) as info:
            HfApi(token=token).edit_discussion_comment(REPO, created.num, comment.id, "hijack")
        assert info.value.response.status_code == 403

    details = api.get_discussion_details(REPO, created.num)
    comments = [e for e in details.events if e.type == "comment"]
    assert [c.content for c in comments] == ["desc", "<!-- sticky -->\nsecond"]
    assert comments[1].id == comment.id and comments[1].last_edited_by == "alice"

    status = api.change_discussion_status(REPO, created.num, "closed", comment="done")
    assert status.new_status == "closed"
    assert repo.discussion(REPO, created.num).status == "closed"
    assert not list(api.get_repo_discussions(REPO, discussion_status="open"))
    assert [r.path.rsplit("/", 1)[-1] for r in repo.mutations()] == [
        "discussions",
        "comment",
        "edit",
        "status",
    ]


def test_merge_pull_request(repo: HubServer) -> None:
    api = HfApi()
    pr = api.create_commit(
        REPO, [_add("gradience/bench.json", "{}")], commit_message="bench", create_pr=True
    )
    repo.push(REPO, {"unrelated.txt": "u"})
    api.merge_pull_request(REPO, pr.pr_num)
    assert repo.read(REPO, "gradience/bench.json") == b"{}"
    assert repo.read(REPO, "unrelated.txt") == b"u"
    assert api.get_discussion_details(REPO, pr.pr_num).status == "merged"


# -- fault injection: what the client retries and what it surfaces -----------------------------


def test_head_failures_on_download(repo: HubServer) -> None:
    # hf_hub_download's first HEAD has no retry (it would rather fall back to the cache). After
    # an HTTP 5xx/429 with nothing cached, it asks again with backoff enabled: one 500 costs one
    # extra HEAD and no sleep.
    repo.inject("HEAD", r"/resolve/main/adapter_config\.json$", status=500)
    hf_hub_download(REPO, "adapter_config.json")
    assert len(repo.requests_to("adapter_config", method="HEAD")) == 2
    # A dropped connection is not caught there (only ConnectError/timeouts are): the
    # transport's own exception escapes, not an HfHubHTTPError.
    repo.inject("HEAD", r"/resolve/main/README\.md$", drop=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        hf_hub_download(REPO, "README.md")
    # With force_download=True even a 500 is final.
    repo.inject("HEAD", r"/resolve/main/README\.md$", status=500)
    with pytest.raises(ValueError, match="Force download failed"):
        hf_hub_download(REPO, "README.md", force_download=True)
    assert hf_hub_download(REPO, "README.md")  # faults are used up


def test_commit_is_never_retried(repo: HubServer) -> None:
    api = HfApi()
    repo.inject("POST", r"/commit/", status=500)
    with pytest.raises(HfHubHTTPError) as info:
        api.create_commit(REPO, [_add("x.txt", "1")], commit_message="x")
    assert info.value.response.status_code == 500

    # A dropped connection surfaces as the transport's own exception, not HfHubHTTPError.
    repo.inject("POST", r"/commit/", drop=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        api.create_commit(REPO, [_add("x.txt", "2")], commit_message="x")
    assert len(repo.requests_to(r"/commit/")) == 2 and repo.mutations() == []


def test_preupload_429_is_retried_after_retry_after(repo: HubServer) -> None:
    fault = repo.inject("POST", r"/preupload/", status=429)
    started = time.monotonic()
    HfApi().create_commit(REPO, [_add("x.txt", "x")], commit_message="x")
    # The client sleeps Retry-After + 1 seconds (here 0 + 1) before the second attempt.
    assert time.monotonic() - started >= 1.0
    assert fault.hits == 1 and len(repo.requests_to(r"/preupload/")) == 2
    assert repo.read(REPO, "x.txt") == b"x"


def test_api_calls_without_backoff_fail_fast(repo: HubServer) -> None:
    repo.inject("GET", r"/discussions$", status=500)
    with pytest.raises(HfHubHTTPError):
        list(HfApi().get_repo_discussions(REPO))
    assert len(repo.requests_to(r"/discussions$")) == 1
    # snapshot_download swallows HTTP errors on its model_info call (to try the cache): with
    # nothing cached, a 500 surfaces as LocalEntryNotFoundError, an EntryNotFoundError.
    repo.inject("GET", r"/api/models/alice/adapter/revision/main$", status=500)
    with pytest.raises(LocalEntryNotFoundError) as info:
        snapshot_download(REPO)
    assert isinstance(info.value, EntryNotFoundError)
    assert not isinstance(info.value, HfHubHTTPError)


def test_truncated_download_restarts_and_server_honours_range(repo: HubServer) -> None:
    repo.inject("GET", r"/resolve/.*/adapter_model\.safetensors$", partial=3)
    local = hf_hub_download(REPO, "adapter_model.safetensors")
    assert Path(local).read_bytes() == b"\x00\x01weights"
    # The client buffers DOWNLOAD_CHUNK_SIZE (10 MB) before writing, so bytes of a cut small
    # file are never counted: it retries (after a 1 s sleep) from zero, without Range.
    gets = repo.requests_to(r"adapter_model", method="GET")
    assert [(g.headers.get("Range"), g.status) for g in gets] == [(None, 200), (None, 200)]
    # Resumes of large files do send Range; the server answers like the Hub.
    url = f"{repo.url}/{REPO}/resolve/main/adapter_model.safetensors"
    part = httpx2.get(url, headers={"Range": "bytes=2-"})
    assert part.status_code == 206 and part.content == b"weights"
    assert part.headers["Content-Range"] == "bytes 2-8/9"
    assert httpx2.get(url, headers={"Range": "bytes=50-"}).status_code == 416


# -- request log and subprocess environment -----------------------------------------------------


def test_request_log_separates_reads_writes_and_mutations(repo: HubServer) -> None:
    api = HfApi()
    api.model_info(REPO)
    list(api.get_repo_discussions(REPO))
    assert repo.write_requests() == [] and repo.mutations() == []
    with pytest.raises(ValueError):  # invalid YAML: validate-yaml answers 400, nothing written
        api.create_commit(REPO, [_add("README.md", "---\n: [\n---\n")], commit_message="x")
    assert [r.path for r in repo.write_requests()] == ["/api/validate-yaml"]
    assert repo.mutations() == []
    assert all(r.headers.get("Authorization") in (None, "REDACTED") for r in repo.requests)
    assert {r.user for r in repo.requests} == {"alice"}


def test_subprocess_env_points_a_fresh_interpreter_at_the_server(hub_server: HubServer) -> None:
    hub_server.create_repo("alice/m", {"f.txt": "hello"})
    script = (
        "import huggingface_hub as h;"
        "print(h.whoami()['name']);"
        "print(open(h.hf_hub_download('alice/m', 'f.txt')).read())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=hub_server.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["alice", "hello"]
    assert out.stdout and hub_server.hf_home in hub_server.subprocess_env()["HF_HOME"]
    anonymous = hub_server.subprocess_env(token=None)
    assert "HF_TOKEN" not in anonymous
