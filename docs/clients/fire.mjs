// Fires order.created through Herald's JSON door with Node's fetch (Node 18
// or later) and prints the delivery ids, one a line. Needs HERALD_URL
// (http://127.0.0.1:50051) and HERALD_TOKEN; HERALD_TENANT is optional.

const url = `${process.env.HERALD_URL.replace(/\/$/, "")}/v1/fire`;
let response;
try {
  response = await fetch(url, {
    method: "POST",
    headers: {
      authorization: `Bearer ${process.env.HERALD_TOKEN}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({
      tenant: process.env.HERALD_TENANT ?? "",
      event: "order.created",
      // The event's data is a JSON document given as a string.
      json: JSON.stringify({ order_id: 42 }),
    }),
    signal: AbortSignal.timeout(10_000),
  });
} catch (error) {
  console.error(`herald: ${error.cause?.message ?? error.message}`);
  process.exit(1);
}
const raw = await response.text();
if (!response.ok) {
  // Herald answers {"code":…,"status":"…","message":"…"}; a proxy in
  // between may answer something else, so fall back to the raw body.
  let message = raw;
  try {
    message = JSON.parse(raw).message ?? raw;
  } catch {}
  console.error(`herald: HTTP ${response.status}: ${message}`);
  process.exit(1);
}
for (const id of JSON.parse(raw).deliveryIds ?? []) console.log(id);
