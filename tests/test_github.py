"""gradience_hub.github against the GitHub REST test server: real PyGithub, real HTTP, no mocks."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from gradience_hub.errors import EXIT_REMOTE, GitHubError, UsageError
from gradience_hub.github import (
    ACTIONS_BOT_LOGIN,
    MARKER,
    CommentResult,
    GitHubClient,
    GitHubPermissionError,
    ensure_marker,
    pr_number_from_event,
)
from tests.githubserver import GitHubServer

REPO = "octo-org/adapters"
PR = 7
TOKEN = "ghp_alice0123456789SECRET"
BOT_TOKEN = "ghs_installation0123456789SECRET"
READ_TOKEN = "ghs_forkreadonly0123456789SECRET"
SECONDARY = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
COMMENTS = r"/issues/\d+/comments$"
EDIT = r"/issues/comments/\d+$"

# Everything instant: no throttling between requests, no backoff, no rate-limit wait.
FAST = dict(
    retries=3,
    backoff_factor=0.0,
    secondary_rate_wait=0.0,
    min_request_interval=0.0,
    min_write_interval=0.0,
    timeout=5,
)


def seed(server: GitHubServer) -> GitHubServer:
    """Users: alice (PAT, write), bob (no token), the Actions bot, a read-only token; one PR."""
    server.add_user("alice", TOKEN)
    server.add_user("bob")
    server.add_user(ACTIONS_BOT_LOGIN, BOT_TOKEN, installation=True)
    server.add_user("fork-reader", READ_TOKEN, permission="read")
    server.add_pr(REPO, PR)
    return server


@pytest.fixture
def gh(github_server: GitHubServer) -> GitHubServer:
    return seed(github_server)


@pytest.fixture
def client(gh: GitHubServer) -> Callable[..., GitHubClient]:
    """Factory: a fast client for ``token`` against the seeded server."""
    made: list[GitHubClient] = []

    def make(token: str = TOKEN, **kwargs: object) -> GitHubClient:
        made.append(GitHubClient(token, gh.api_url, **{**FAST, **kwargs}))
        return made[-1]

    yield make
    for c in made:
        c.close()


# -- sticky comment -------------------------------------------------------------------------


def test_create_then_update_keeps_one_comment(gh, client):
    c = client()
    first = c.upsert_sticky_comment(REPO, PR, "audit: 12% of rank used")
    assert first.action == "created"
    [stored] = gh.comments(REPO, PR)
    assert stored["body"] == f"{MARKER}\naudit: 12% of rank used"
    assert stored["user"]["login"] == "alice"
    assert first == CommentResult(stored["html_url"], stored["id"], "created")
    assert first.url.endswith(f"/{REPO}/pull/{PR}#issuecomment-{stored['id']}")

    second = c.upsert_sticky_comment(REPO, PR, "audit: 40% of rank used")
    assert (second.action, second.id) == ("updated", first.id)
    [stored] = gh.comments(REPO, PR)
    assert stored["body"].endswith("audit: 40% of rank used")
    assert gh.count("POST") == 1 and gh.count("PATCH") == 1


def test_marker_already_in_body_is_not_doubled(gh, client):
    client().upsert_sticky_comment(REPO, PR, f"report\n{MARKER}")
    assert gh.comments(REPO, PR)[0]["body"] == f"report\n{MARKER}"
    assert ensure_marker("x") == f"{MARKER}\nx"
    assert ensure_marker(f"x {MARKER}") == f"x {MARKER}"


def test_unchanged_body_sends_no_write(gh, client):
    c = client()
    c.upsert_sticky_comment(REPO, PR, "same")
    gh.requests.clear()
    result = c.upsert_sticky_comment(REPO, PR, "same")
    assert result.action == "unchanged"
    assert gh.count("PATCH") == 0 and gh.count("POST") == 0


def test_crlf_from_web_edit_counts_as_unchanged(gh, client):
    gh.add_comment(REPO, PR, "alice", f"{MARKER}\r\nline one\r\nline two")
    result = client().upsert_sticky_comment(REPO, PR, "line one\nline two")
    assert result.action == "unchanged" and gh.count("PATCH") == 0


def test_comments_by_others_are_never_edited(gh, client):
    bob = gh.add_comment(REPO, PR, "bob", f"{MARKER}\nbob quoted the bot")
    bot = gh.add_comment(REPO, PR, ACTIONS_BOT_LOGIN, f"{MARKER}\nold bot report")
    gh.add_comment(REPO, PR, "alice", "alice's comment without the marker")

    result = client().upsert_sticky_comment(REPO, PR, "fresh report")
    assert result.action == "created"
    comments = {c["id"]: c for c in gh.comments(REPO, PR)}
    assert len(comments) == 4
    assert comments[bob["id"]]["body"] == bob["body"]
    assert comments[bot["id"]]["body"] == bot["body"]
    assert gh.count("PATCH") == 0


def test_first_own_marked_comment_is_the_one_updated(gh, client):
    older = gh.add_comment(REPO, PR, "alice", f"{MARKER}\nv1")
    newer = gh.add_comment(REPO, PR, "alice", f"{MARKER}\nv1 again")
    result = client().upsert_sticky_comment(REPO, PR, "v2")
    assert (result.action, result.id) == ("updated", older["id"])
    bodies = {c["id"]: c["body"] for c in gh.comments(REPO, PR)}
    assert bodies[newer["id"]] == newer["body"]


def test_login_match_is_case_insensitive(gh, client):
    gh.add_user("Alice-Case", "tok-case")
    mine = gh.add_comment(REPO, PR, "Alice-Case", f"{MARKER}\nv1")
    result = client("tok-case").upsert_sticky_comment(REPO, PR, "v2")
    assert result.id == mine["id"] and result.action == "updated"


def test_pagination_finds_our_comment_past_100(gh, client):
    for i in range(130):
        gh.add_comment(REPO, PR, "bob", f"review note {i}")
    ours = gh.add_comment(REPO, PR, "alice", f"{MARKER}\nold")
    gh.requests.clear()

    result = client().upsert_sticky_comment(REPO, PR, "new")
    assert (result.action, result.id) == ("updated", ours["id"])
    assert len(gh.comments(REPO, PR)) == 131
    pages = gh.requests_matching("GET", COMMENTS)
    assert [r.query.get("page", "1") for r in pages] == ["1", "2"]
    assert all(r.query["per_page"] == "100" for r in pages)
    # The second page came from the Link header, which names the repository by id.
    assert pages[1].path.startswith("/repositories/")


def test_server_pagination_default_page_size(gh):
    """Without per_page the server pages by 30, like GitHub; PyGithub follows Link to the end."""
    from github import Auth, Github

    for i in range(65):
        gh.add_comment(REPO, PR, "bob", f"n{i}")
    with Github(auth=Auth.Token(TOKEN), base_url=gh.api_url, seconds_between_requests=None) as g:
        bodies = [c.body for c in g.get_repo(REPO).get_issue(PR).get_comments()]
    assert bodies == [f"n{i}" for i in range(65)]
    assert [r.query.get("page") for r in gh.requests_matching("GET", COMMENTS)] == [
        None,
        "2",
        "3",
    ]


# -- identities -----------------------------------------------------------------------------


def test_installation_token_identity_is_the_actions_bot(gh, client):
    gh.add_comment(REPO, PR, "alice", f"{MARKER}\nalice ran it locally once")
    c = client(BOT_TOKEN)
    assert c.whoami() == ACTIONS_BOT_LOGIN
    created = c.upsert_sticky_comment(REPO, PR, "from CI")
    updated = c.upsert_sticky_comment(REPO, PR, "from CI, again")
    assert (created.action, updated.action, updated.id) == ("created", "updated", created.id)
    by_author = {x["user"]["login"]: x for x in gh.comments(REPO, PR)}
    assert by_author[ACTIONS_BOT_LOGIN]["user"]["type"] == "Bot"
    assert by_author["alice"]["body"].endswith("alice ran it locally once")
    # GET /user was refused once and the answer cached.
    assert [r.status for r in gh.requests_matching("GET", "/user$")] == [403]


def test_custom_app_bot_login(gh, client):
    gh.add_user("gradience-app[bot]", "ghs_app", installation=True)
    c = client("ghs_app", bot_login="gradience-app[bot]")
    assert c.whoami() == "gradience-app[bot]"
    assert c.upsert_sticky_comment(REPO, PR, "x").action == "created"
    assert c.upsert_sticky_comment(REPO, PR, "y").action == "updated"


def test_whoami_of_a_personal_token(client):
    assert client().whoami() == "alice"


# -- failures -------------------------------------------------------------------------------


def test_read_only_token_raises_permission_error(gh, client):
    with pytest.raises(GitHubPermissionError) as info:
        client(READ_TOKEN).upsert_sticky_comment(REPO, PR, "x")
    err = info.value
    assert isinstance(err, GitHubError) and err.exit_code == EXIT_REMOTE == 3
    assert err.status == 403
    assert "Resource not accessible by integration" in err.message
    assert "fork" in err.hint
    assert gh.comments(REPO, PR) == []
    assert gh.count("POST") == 1  # a plain 403 is not retried


def test_read_only_installation_token_as_on_a_fork_pr(gh, client):
    gh.add_user(ACTIONS_BOT_LOGIN, "ghs_fork", permission="read", installation=True)
    with pytest.raises(GitHubPermissionError):
        client("ghs_fork").upsert_sticky_comment(REPO, PR, "x")


def test_bad_token_is_a_github_error_with_exit_code_3(gh, client):
    with pytest.raises(GitHubError) as info:
        client("ghp_not_a_real_token").upsert_sticky_comment(REPO, PR, "x")
    err = info.value
    assert not isinstance(err, GitHubPermissionError)
    assert (err.exit_code, err.status) == (3, 401)
    assert "Bad credentials" in err.message
    assert gh.count("GET", "/user$") == 1  # 401 is not retried


def test_unknown_pull_request_is_404(gh, client):
    with pytest.raises(GitHubError) as info:
        client().upsert_sticky_comment(REPO, 999, "x")
    assert info.value.status == 404 and "Not Found" in info.value.message


def test_validation_error_carries_the_api_details(gh, client):
    with pytest.raises(GitHubError) as info:
        client().upsert_sticky_comment(REPO, PR, "x" * 70000)
    assert info.value.status == 422
    assert "body is too long" in info.value.message


@pytest.mark.parametrize(
    ("repo", "number"), [("not-a-repo", 1), ("a/b/c", 1), (REPO, 0), (REPO, True), (REPO, "7")]
)
def test_bad_target_is_usage_error(gh, client, repo, number):
    with pytest.raises(UsageError):
        client().upsert_sticky_comment(repo, number, "x")
    assert gh.requests == []


def test_missing_token_is_usage_error():
    with pytest.raises(UsageError) as info:
        GitHubClient("", "https://api.github.com")
    assert "GITHUB_TOKEN" in info.value.hint


# -- retries --------------------------------------------------------------------------------


def test_502_on_listing_is_retried(gh, client):
    gh.inject("GET", COMMENTS, 502)
    assert client().upsert_sticky_comment(REPO, PR, "x").action == "created"
    # the listing, retried, then the re-read after posting that finds a racing duplicate
    assert [r.status for r in gh.requests_matching("GET", COMMENTS)] == [502, 200, 200]


def test_502_on_edit_is_retried(gh, client):
    gh.add_comment(REPO, PR, "alice", f"{MARKER}\nold")
    gh.inject("PATCH", EDIT, 502)
    assert client().upsert_sticky_comment(REPO, PR, "new").action == "updated"
    assert [r.status for r in gh.requests_matching("PATCH")] == [502, 200]


def test_502_after_create_landed_posts_no_duplicate(gh, client):
    # The gateway fails *after* GitHub stored the comment: a blind POST retry would duplicate.
    gh.inject("POST", COMMENTS, 502, process=True)
    result = client().upsert_sticky_comment(REPO, PR, "x")
    assert result.action == "created"
    [stored] = gh.comments(REPO, PR)
    assert result.id == stored["id"]
    assert gh.count("POST") == 1


def test_502_before_create_landed_creates_once(gh, client):
    gh.inject("POST", COMMENTS, 502)
    result = client().upsert_sticky_comment(REPO, PR, "x")
    assert result.action == "created"
    assert len(gh.comments(REPO, PR)) == 1
    assert [r.status for r in gh.requests_matching("POST")] == [502, 201]


def test_persistent_5xx_gives_up_with_the_status(gh, client):
    gh.inject("GET", COMMENTS, 503, times=100)
    with pytest.raises(GitHubError) as info:
        client(retries=2).upsert_sticky_comment(REPO, PR, "x")
    assert info.value.status == 503 and info.value.exit_code == 3
    assert gh.count("GET", COMMENTS) == 3


def test_secondary_rate_limit_with_retry_after_is_retried(gh, client):
    gh.inject("POST", COMMENTS, 403, headers={"Retry-After": "0"}, body=SECONDARY)
    assert client().upsert_sticky_comment(REPO, PR, "x").action == "created"
    assert [r.status for r in gh.requests_matching("POST")] == [403, 201]
    assert len(gh.comments(REPO, PR)) == 1


def test_secondary_rate_limit_without_retry_after_is_retried(gh, client):
    gh.inject("PATCH", EDIT, 403, body=SECONDARY)
    gh.add_comment(REPO, PR, "alice", f"{MARKER}\nold")
    assert client().upsert_sticky_comment(REPO, PR, "new").action == "updated"
    assert [r.status for r in gh.requests_matching("PATCH")] == [403, 200]


def test_429_with_retry_after_is_retried(gh, client):
    gh.inject("GET", COMMENTS, 429, headers={"Retry-After": "0"}, body=SECONDARY)
    assert client().upsert_sticky_comment(REPO, PR, "x").action == "created"


def test_rate_limit_that_never_lifts_is_not_a_permission_error(gh, client):
    gh.inject("POST", COMMENTS, 403, times=100, headers={"Retry-After": "0"}, body=SECONDARY)
    with pytest.raises(GitHubError) as info:
        client(retries=2).upsert_sticky_comment(REPO, PR, "x")
    assert not isinstance(info.value, GitHubPermissionError)
    assert info.value.status == 403
    assert gh.count("POST") == 3


def test_primary_rate_limit_beyond_the_wait_cap_fails_fast(gh, client):
    reset = str(int(time.time()) + 3600)
    gh.inject(
        "GET",
        "/user$",
        403,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
        body={"message": "API rate limit exceeded for user ID 1001."},
    )
    with pytest.raises(GitHubError) as info:
        client(max_rate_limit_wait=5).whoami()
    assert not isinstance(info.value, GitHubPermissionError)
    assert info.value.status == 403
    assert "rate limit" in info.value.hint
    assert gh.count("GET", "/user$") == 1


def test_unreachable_server_is_a_github_error(gh):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        c = GitHubClient(TOKEN, f"http://127.0.0.1:{port}", **{**FAST, "retries": 1})
        with pytest.raises(GitHubError) as info:
            c.whoami()
    assert info.value.status is None and info.value.exit_code == 3
    assert "could not reach GitHub" in info.value.message


# -- base URL, headers, secrets -------------------------------------------------------------


def test_enterprise_base_url_with_path_prefix(github_enterprise_server):
    gh = seed(github_enterprise_server)
    for i in range(105):
        gh.add_comment(REPO, PR, "bob", f"n{i}")
    assert gh.api_url.endswith("/api/v3")
    with GitHubClient(TOKEN, gh.api_url + "/", **FAST) as c:
        assert c.upsert_sticky_comment(REPO, PR, "one").action == "created"
        assert c.upsert_sticky_comment(REPO, PR, "two").action == "updated"
    assert len(gh.comments(REPO, PR)) == 106
    assert gh.requests and all(r.path.startswith("/api/v3/") for r in gh.requests)


def test_from_env_reads_token_and_api_url(gh):
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": gh.api_url}
    with GitHubClient.from_env(env, **FAST) as c:
        assert c.api_url == gh.api_url
        assert c.whoami() == "alice"
    assert GitHubClient.from_env({"GITHUB_TOKEN": "t"}).api_url == "https://api.github.com"


def test_requests_carry_token_auth_and_our_user_agent(gh, client):
    client().upsert_sticky_comment(REPO, PR, "x")
    for r in gh.requests:
        assert r.headers["Authorization"] == "token <redacted>"
        assert r.headers["User-Agent"].startswith("gradience-hub/")
    assert TOKEN not in repr(gh.requests)


def _all_text(err: BaseException) -> str:
    parts = []
    while err is not None:
        parts += [str(err), repr(err), str(getattr(err, "hint", ""))]
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("token", "fault"),
    [
        ("ghp_bogus_SECRET_value", None),
        (READ_TOKEN, None),
        (TOKEN, (r"/comments$", 500, None)),
        (TOKEN, (r"/user$", 418, None)),
    ],
)
def test_token_never_appears_in_errors(gh, client, token, fault):
    if fault:
        gh.inject("*", fault[0], fault[1], times=100)
    c = client(token)
    with pytest.raises(GitHubError) as info:
        c.upsert_sticky_comment(REPO, PR, "x")
    # Not in our error, nor in the PyGithub / requests errors chained to it for debugging.
    assert token not in _all_text(info.value)
    assert token not in "\n".join(info.value.user_lines())
    assert token not in repr(c)


def test_token_echoed_by_the_api_is_scrubbed_from_our_message(gh, client):
    gh.inject("GET", "/user$", 418, body={"message": f"I'm a teapot holding {TOKEN}"})
    with pytest.raises(GitHubError) as info:
        client().whoami()
    assert "I'm a teapot holding ***" in info.value.message
    assert TOKEN not in "\n".join(info.value.user_lines())


# -- pr_number_from_event -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "event", "expected"),
    [
        ("pull_request", {"number": 5, "pull_request": {"number": 5}}, 5),
        ("pull_request", {"number": 6}, 6),
        ("pull_request_target", {"pull_request": {"number": 8}}, 8),
        ("pull_request_review", {"pull_request": {"number": 9}}, 9),
        ("issue_comment", {"issue": {"number": 3, "pull_request": {"url": "u"}}}, 3),
        ("issue_comment", {"issue": {"number": 3}}, None),
        ("workflow_run", {"workflow_run": {"pull_requests": [{"number": 11}, {"number": 12}]}}, 11),
        ("workflow_run", {"workflow_run": {"pull_requests": []}}, None),
        ("workflow_run", {"workflow_run": {}}, None),
        ("push", {"number": 4}, None),
        ("workflow_dispatch", {}, None),
        ("pull_request", {}, None),
        ("pull_request", {"pull_request": {"number": "x"}}, None),
        ("pull_request", {"pull_request": {"number": True}}, None),
        ("pull_request", {"pull_request": None, "number": 2}, 2),
    ],
)
def test_pr_number_from_event(name, event, expected):
    assert pr_number_from_event(name, event) == expected
