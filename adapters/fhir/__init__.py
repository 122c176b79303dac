"""FHIR R4 sources: REST sync by ``_lastUpdated`` watermark, Bulk Data ``$export``, auth, scheduling.

Layout (computing apart from I/O):

* :mod:`.sources`    the ``[[fhir_sources]]`` tables of the configuration file
* :mod:`.policy`     pure: retry and backoff (``Retry-After``), rate limiting, watermarks, NDJSON lines
* :mod:`.references` pure: the id scheme and reference rewriting
* :mod:`.auth`       none, basic, bearer, OAuth 2.0 client credentials, SMART Backend Services
* :mod:`.http`       one HTTP session per source: rate limit, retries, re-authentication
* :mod:`.state`      sync state in the project database (watermarks, bulk jobs and file progress, runs)
* :mod:`.rest`       search paging through ``Bundle.link[next]``
* :mod:`.bulk`       ``$export`` kick-off, status polling, streamed NDJSON download with resumption
* :mod:`.runner`     one sync of one source; the apscheduler jobs; the progress bar
"""
