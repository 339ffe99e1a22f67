#!/usr/bin/env node
// The official tus server, @tus/server with @tus/s3-store, on a loopback port against an S3 endpoint: the
// reference the benchmark compares edcrm with (same client, same S3), and a check of the clients here.
//
//   node tests/clients/reference_server.mjs --port 1080 --s3-endpoint http://127.0.0.1:7480 --bucket B \
//     [--path /files/] [--part-size 8388608] [--access-key K --secret-key S] [--region us-east-1]
//
// Keys default to AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Once it listens it prints one JSON line
// {"ready": true, "endpoint": "http://127.0.0.1:PORT/files/"}; on every finished upload one line
// {"event": "finished", "id", "size", "key", "at"} (at: epoch milliseconds), which a benchmark reads to
// time the last byte to the finished object. SIGTERM or SIGINT stops it.

import http from 'node:http'
import { parseArgs } from 'node:util'
import { S3Store } from '@tus/s3-store'
import { EVENTS, Server } from '@tus/server'

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '1080' },
    host: { type: 'string', default: '127.0.0.1' },
    path: { type: 'string', default: '/files/' },
    's3-endpoint': { type: 'string' },
    bucket: { type: 'string' },
    region: { type: 'string', default: process.env.AWS_REGION ?? 'us-east-1' },
    'access-key': { type: 'string', default: process.env.AWS_ACCESS_KEY_ID ?? 'testing' },
    'secret-key': { type: 'string', default: process.env.AWS_SECRET_ACCESS_KEY ?? 'testing' },
    'part-size': { type: 'string', default: String(8 * 1024 * 1024) },
    'allowed-origin': { type: 'string', multiple: true },
  },
})

if (!args['s3-endpoint'] || !args.bucket) {
  console.error('usage: reference_server.mjs --s3-endpoint URL --bucket NAME [--port N] [--path /files/]')
  process.exit(2)
}

const store = new S3Store({
  partSize: Number(args['part-size']),
  s3ClientConfig: {
    bucket: args.bucket,
    region: args.region,
    endpoint: args['s3-endpoint'],
    forcePathStyle: true,
    credentials: { accessKeyId: args['access-key'], secretAccessKey: args['secret-key'] },
    // The SDK's default CRC32 on every request is one more pass over each part, which boto3 does not
    // make with edcrm's client config (request_checksum_calculation="when_required"): the same work.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  },
})

const server = new Server({
  path: args.path.replace(/\/$/, ''),
  datastore: store,
  respectForwardedHeaders: false,
  allowedOrigins: args['allowed-origin'],
})

server.on(EVENTS.POST_FINISH, (req, res, upload) => {
  console.log(JSON.stringify({ event: 'finished', id: upload.id, size: upload.size, key: upload.id, at: Date.now() }))
})

const listener = http.createServer((req, res) => server.handle(req, res))
listener.listen(Number(args.port), args.host, () => {
  const { port } = listener.address()
  console.log(JSON.stringify({ ready: true, endpoint: `http://${args.host}:${port}${args.path}` }))
})

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    listener.close(() => process.exit(0))
    listener.closeAllConnections()
  })
}
