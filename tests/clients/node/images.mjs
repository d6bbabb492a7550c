// The official OpenAI Node SDK as a client of the gateway: runs each case given, an edit (its
// images sent with `toFile`, as the SDK's docs show) or a generation, and prints one JSON object
// `{caseId: {ok, body, headers} | {ok: false, error}}`. A failed case does not stop the others.
//
//   node images.mjs BASE_URL API_KEY IMAGE_PATH CASES_JSON
//   CASES_JSON: [{"id", "operation": "edit" | "generate", "images": N (edits), "params": {...},
//                 "apiKey": "..." (optional: another key than API_KEY)}]
import { readFile } from 'node:fs/promises';
import OpenAI, { toFile } from 'openai';
import { VERSION } from 'openai/version';

const HEADERS = ['content-type', 'x-request-id', 'x-gateway-route', 'x-gateway-image-model', 'x-gateway-attempts'];

async function run(client, imagePath, testCase) {
  if (testCase.apiKey) {
    client = client.withOptions({ apiKey: testCase.apiKey });
  }
  let request;
  if (testCase.operation === 'edit') {
    const bytes = await readFile(imagePath);
    const files = await Promise.all(
      Array.from({ length: testCase.images }, (_, i) => toFile(bytes, `photo-${i}.png`, { type: 'image/png' })),
    );
    // One file is sent as `image`; an array as `image[]` parts, the SDK's own encoding.
    const image = files.length === 1 ? files[0] : files;
    request = client.images.edit({ ...testCase.params, image });
  } else {
    request = client.images.generate(testCase.params);
  }
  const { data, response } = await request.withResponse();
  return { ok: true, body: data, headers: picked(response.headers), requestId: data._request_id ?? null };
}

function picked(headers) {
  return Object.fromEntries(HEADERS.map((name) => [name, headers?.get?.(name) ?? null]));
}

async function main() {
  const [baseURL, apiKey, imagePath, casesJson] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
  const results = {};
  for (const testCase of JSON.parse(casesJson)) {
    try {
      results[testCase.id] = await run(client, imagePath, testCase);
    } catch (error) {
      results[testCase.id] = {
        ok: false,
        error: {
          name: error?.constructor?.name,
          status: error?.status ?? null,
          code: error?.code ?? null,
          message: String(error?.message),
        },
        headers: picked(error?.headers),
        requestId: error?.requestID ?? null,
      };
    }
  }
  process.stdout.write(JSON.stringify({ sdkVersion: VERSION, results }));
}

await main();
