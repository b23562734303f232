// The SHA-256 of the bearer token a request carries, in hex, for nginx's map of key hashes
// (serving/api_keys.py). A request without one hashes the empty string: a missing key and a wrong
// key cost the same.
var crypto = require('crypto');

function sha256(r) {
    var header = r.headersIn.Authorization || "";
    var token = header.startsWith("Bearer ") ? header.slice(7) : "";
    return crypto.createHash('sha256').update(token).digest('hex');
}

export default {sha256};
