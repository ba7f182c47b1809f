"""FHIR R4 REST use cases (read, search, capabilities) over the results use cases: the same
authorization, privacy decision and access log as SearchResults/GetResult, FHIR in and out
(adapters/fhir.py, adapters/fhir_search.py) and the saved searches behind `next` links
(adapters/fhir_pages.py)."""

from __future__ import annotations

from typing import Any

from samhandling.results.v1 import results_service_pb2 as pb

from services.common.auth import Principal
from services.common.errors import NotFound
from services.results.adapters import fhir, fhir_search
from services.results.adapters.fhir_pages import SavedSearches
from services.results.adapters.fhir_search import DIAGNOSTIC_REPORT, OBSERVATION, PAGE_TOKEN
from services.results.service_layer.services import ResultsService


class FhirRest:
    def __init__(self, results: ResultsService, searches: SavedSearches) -> None:
        self.results = results
        self.searches = searches

    def read_observation(self, principal: Principal, observation_id: str) -> dict[str, Any]:
        result_id, obs_id = fhir_search.split_observation_id(observation_id)
        result = self.results.get(principal, result_id)
        for obs in result.observations:
            if obs.observation_id == obs_id:
                return fhir_search.observation(result, obs)
        raise NotFound("no such observation", reason="OBSERVATION_NOT_FOUND")

    def search(
        self,
        principal: Principal,
        base: str,
        resource_type: str,
        body: bytes,
        content_type: str,
        url_query: str,
    ) -> dict[str, Any]:
        in_url = fhir_search.query_parameters(url_query)
        legacy = None if in_url else fhir_search.legacy_query(body, content_type)
        pairs: list[tuple[str, str]] = []
        if legacy is not None and resource_type == DIAGNOSTIC_REPORT:
            search = fhir_search.Search(resource_type, legacy)
        else:
            pairs = fhir_search.parameters(body, content_type)
            search = fhir_search.search(resource_type, pairs, in_url)
        search_id = ""
        if search.page_token:
            others = [n for n, _v in [*in_url, *pairs] if n not in (PAGE_TOKEN, "_format")]
            if others:
                raise fhir_search._bad(others[0], f"not allowed together with {PAGE_TOKEN}")
            search_id, search = self.searches.load(principal, resource_type, search.page_token)
        reply = self.results.search(principal, search.query)
        if not search_id:
            search_id = self.searches.save(principal, search)
        resources: list[dict[str, Any]]
        total: int | None
        if resource_type == OBSERVATION:
            wanted = set(search.observation_codes)
            resources = [
                fhir_search.observation(r, o)
                for r in reply.results
                for o in r.observations
                if not wanted or o.code.code in wanted
            ]
            total = None  # pages are counted in reports; the number of observations is not
        else:
            resources = [fhir.result_to_fhir(r) for r in reply.results]
            total = reply.total_size
        next_token = f"{search_id}.{reply.next_page_token}" if reply.next_page_token else ""
        return fhir_search.bundle(
            base,
            resource_type,
            resources,
            total,
            f"{search_id}.{search.query.page_token}",
            next_token,
        )

    def read_report(self, principal: Principal, result_id: str) -> pb.Result:
        return self.results.get(principal, result_id)
