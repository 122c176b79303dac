"""Paging by position (bridge.api.paging): a next link names the entry its page follows, so data
stored or updated between two pages neither repeats an entry nor skips one that did not change."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.api import create_app
from bridge.api.paging import Order, decode_cursor, encode_cursor, paginate
from bridge.fhir_query import SearchError
from bridge.services import open_services

from .fhir_support import bearer, consent, observation, patient, put

NEWEST = Order(lambda item: (item[0], item[1]), (True, False))  # (lastUpdated, id): newest first, then id


def _links(page) -> dict[str, dict[str, list[str]]]:  # type: ignore[no-untyped-def]
    return {rel: parse_qs(urlsplit(url).query) for rel, url in page.links}


def _follow(items, page, relation):  # type: ignore[no-untyped-def]
    query = parse_qs(urlsplit(dict(page.links)[relation]).query)
    args = [(k, v) for k, values in query.items() for v in values]
    return paginate(list(items), NEWEST, "http://x/fhir/Observation", args, int(query["_count"][0]))


def test_order_sorts_each_part_its_own_way_and_cursors_round_trip():
    items = [("2026-01-01", "b"), ("2026-01-02", "a"), ("2026-01-01", "a"), ("2026-01-02", "c")]
    NEWEST.sort(items)
    assert items == [("2026-01-02", "a"), ("2026-01-02", "c"), ("2026-01-01", "a"), ("2026-01-01", "b")]
    assert decode_cursor(encode_cursor(("2026-01-02", "c", 7)), 3) == ("2026-01-02", "c", 7)
    for bad in ("", "not base64!", encode_cursor(("a",)), encode_cursor(("a", 1.5)), "W10"):
        with pytest.raises(SearchError, match="_cursor"):
            decode_cursor(bad, 2)


def test_links_walk_every_entry_once_and_back():
    items = [(f"2026-01-{d:02d}", "x") for d in range(1, 8)]  # 7 entries, pages of 3
    first = paginate(list(items), NEWEST, "http://x/fhir/Observation", [("code", "1")], 3)
    assert [i[0][-2:] for i in first.items] == ["07", "06", "05"] and first.start == 0
    links = _links(first)
    assert set(links) == {"self", "first", "next", "last"} and links["next"]["code"] == ["1"]
    second = _follow(items, first, "next")
    third = _follow(items, second, "next")
    assert [i[0][-2:] for i in second.items + third.items] == ["04", "03", "02", "01"]
    assert "next" not in _links(third) and _follow(items, third, "previous").items == second.items
    assert _follow(items, first, "last").items == third.items
    assert _follow(items, second, "previous").items == first.items
    assert paginate(list(items), NEWEST, "u", [("_offset", "5")], 3).items == items[::-1][5:], "_offset still read"
    assert items == sorted(items), "paginate sorted a copy; the list here is as it was built"
    assert paginate(list(items), NEWEST, "u", [], 0).items == [], "_count=0: the total only"
    with pytest.raises(SearchError, match="combined"):
        paginate(list(items), NEWEST, "u", [("_offset", "1"), ("_cursor", encode_cursor(("a", "b")))], 3)
    with pytest.raises(SearchError, match="does not fit"):
        paginate(list(items), NEWEST, "u", [("_cursor", encode_cursor((5, "b")))], 3)


def test_a_change_between_pages_neither_repeats_nor_skips():
    items = [(f"2026-01-{d:02d}", "x") for d in range(1, 8)]
    first = paginate(list(items), NEWEST, "u", [], 3)
    # meanwhile: a new entry (newest), and 01-02 updated (moves to the front)
    changed = [i for i in items if i[0] != "2026-01-02"] + [("2026-02-01", "new"), ("2026-02-02", "x")]
    pages = [first]
    while "next" in dict(pages[-1].links):
        pages.append(_follow(changed, pages[-1], "next"))
    seen = [item for page in pages for item in page.items]
    assert len(seen) == len(set(seen)) == 6
    unchanged = [i for i in items if i[0] != "2026-01-02"]
    assert set(unchanged) <= set(seen), "no entry that did not change is skipped"
    # what offsets would have done: the 4th-newest now is the 3rd shown before, shown again
    by_offset = paginate(list(changed), NEWEST, "u", [("_offset", "3")], 3).items
    assert set(first.items) & set(by_offset)


@pytest.fixture
def services(config):
    services = open_services(config)
    put(services, patient("p1", "Diaz", "Ana", "female", "1980-01-01"), consent("c1", "p1", "org-a"))
    for day in range(1, 6):
        put(services, observation(f"o{day}", "p1", "2339-0", f"2026-01-0{day}T10:00:00Z"),
            when=f"2026-01-0{day}T10:00:00Z")
    yield services
    services.close()


def _get(client, headers, url):  # type: ignore[no-untyped-def]
    response = client.get("/fhir/" + url.split("/fhir/", 1)[1], headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_search_pages_stay_put_when_a_resource_is_stored_between_them(services):
    client = create_app(services=services).test_client()
    headers = bearer(services, "org-a", "system/*.rs")
    first = _get(client, headers, "/fhir/Observation?patient=p1&_count=2")
    assert [e["resource"]["id"] for e in first["entry"]] == ["o5", "o4"]
    put(services, observation("o6", "p1", "2339-0", "2026-01-06T10:00:00Z"), when="2026-01-06T10:00:00Z")
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = _get(client, headers, following)
    assert [e["resource"]["id"] for e in second["entry"]] == ["o3", "o2"] and second["total"] == 6
    following = next(link["url"] for link in second["link"] if link["relation"] == "next")
    assert [e["resource"]["id"] for e in _get(client, headers, following)["entry"]] == ["o1"]
    bad = client.get("/fhir/Observation?_cursor=nonsense", headers=headers)
    assert bad.status_code == 400 and "_cursor" in bad.get_json()["issue"][0]["diagnostics"]


def test_history_and_everything_page_by_position(services):
    client = create_app(services=services).test_client()
    headers = bearer(services, "org-a", "system/*.rs")
    history = _get(client, headers, "/fhir/Observation/_history?_count=2")
    assert [e["resource"]["id"] for e in history["entry"]] == ["o5", "o4"]
    put(services, observation("o1", "p1", "2339-0", "2026-01-01T10:00:00Z", value=9.9), when="2026-02-01T00:00:00Z")
    rest = _get(client, headers, next(link["url"] for link in history["link"] if link["relation"] == "next"))
    assert [e["resource"]["id"] for e in rest["entry"]] == ["o3", "o2"], "the new version of o1 shifts nothing"
    everything = _get(client, headers, "/fhir/Patient/p1/$everything?_count=3")
    kinds = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in everything["entry"]]
    assert kinds == [("Patient", "p1"), ("Consent", "c1"), ("Observation", "o1")]
    put(services, observation("o0", "p1", "2339-0", "2026-01-01T09:00:00Z"), when="2026-02-02T00:00:00Z")
    rest = _get(client, headers, next(link["url"] for link in everything["link"] if link["relation"] == "next"))
    assert [e["resource"]["id"] for e in rest["entry"]] == ["o2", "o3", "o4"], "o0 sorts before the cursor"
