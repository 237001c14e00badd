<?php
// Fires order.created through Herald's JSON door with PHP's curl extension
// and prints the delivery ids, one a line. Needs HERALD_URL
// (http://127.0.0.1:50051) and HERALD_TOKEN; HERALD_TENANT is optional.

$body = json_encode([
    'tenant' => getenv('HERALD_TENANT') ?: '',
    'event' => 'order.created',
    // The event's data is a JSON document given as a string.
    'json' => json_encode(['order_id' => 42]),
]);
$curl = curl_init(rtrim(getenv('HERALD_URL'), '/') . '/v1/fire');
curl_setopt_array($curl, [
    CURLOPT_POST => true,
    CURLOPT_POSTFIELDS => $body,
    CURLOPT_HTTPHEADER => [
        'Authorization: Bearer ' . getenv('HERALD_TOKEN'),
        'Content-Type: application/json',
    ],
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_TIMEOUT => 10,
]);
$raw = curl_exec($curl);
if ($raw === false) {
    fwrite(STDERR, 'herald: ' . curl_error($curl) . "\n");
    exit(1);
}
$status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
$answer = json_decode($raw, true);
if ($status < 200 || $status > 299) {
    // Herald answers {"code":…,"status":"…","message":"…"}; a proxy in
    // between may answer something else, so fall back to the raw body.
    $message = $answer['message'] ?? $raw;
    fwrite(STDERR, "herald: HTTP $status: $message\n");
    exit(1);
}
foreach ($answer['deliveryIds'] ?? [] as $id) {
    echo $id, "\n";
}
