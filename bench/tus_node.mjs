// The Node.js side of bench/tus.py: tus-js-client uploading a file, and the reference tus server
// (@tus/server + @tus/s3-store) on an S3 endpoint. Both come from tests/clients/node_modules
// (`npm ci --prefix tests/clients`); this file lives outside that folder, so it resolves them from there.
//
//   node bench/tus_node.mjs upload ENDPOINT FILE CHUNK_BYTES   (env TUS_HEADERS, TUS_METADATA: JSON objects)
//     prints one JSON line when the upload succeeded: {"url", "first_byte", "last_ack", "size"} (ms since the epoch:
//     when the first PATCH was sent, and when the answer to the last one was received), or exits 1.
//   node bench/tus_node.mjs server PORT S3_ENDPOINT BUCKET PART_BYTES   (env AWS_ACCESS_KEY_ID, …)
//     serves tus on http://127.0.0.1:PORT/files/ into BUCKET; prints "listening" when it accepts uploads.

import fs from 'node:fs'
import http from 'node:http'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const clients = createRequire(new URL('../tests/clients/package.json', import.meta.url))
const load = async (name) => import(pathToFileURL(clients.resolve(name)).href)
const now = () => performance.timeOrigin + performance.now()

async function upload([endpoint, file, chunkBytes]) {
  const tus = await load('tus-js-client')
  const { Upload } = tus.default ?? tus
  const size = fs.statSync(file).size
  let firstByte = null
  let lastAck = null
  let upload
  try {
    await new Promise((resolve, reject) => {
      upload = new Upload(fs.createReadStream(file), {
        endpoint,
        chunkSize: Number(chunkBytes),
        uploadSize: size,
        headers: JSON.parse(process.env.TUS_HEADERS || '{}'),
        metadata: JSON.parse(process.env.TUS_METADATA || '{}'),
        retryDelays: null, // a failure is a failure of the run, not something to hide behind a retry
        storeFingerprintForResuming: false,
        onBeforeRequest(req) {
          if (firstByte === null && req.getMethod() === 'PATCH') firstByte = now()
        },
        onAfterResponse(req) {
          if (req.getMethod() === 'PATCH') lastAck = now()
        },
        onError: reject,
        onSuccess: resolve,
      })
      upload.start()
    })
  } catch (error) {
    console.error(String(error))
    process.exit(1)
  }
  process.stdout.write(`${JSON.stringify({ url: upload.url, first_byte: firstByte, last_ack: lastAck, size })}\n`)
}

async function server([port, s3Endpoint, bucket, partBytes]) {
  const { Server } = await load('@tus/server')
  const { S3Store } = await load('@tus/s3-store')
  const datastore = new S3Store({
    partSize: Number(partBytes),
    minPartSize: Number(partBytes),
    s3ClientConfig: {
      bucket,
      endpoint: s3Endpoint,
      forcePathStyle: true,
      region: process.env.AWS_REGION || 'us-east-1',
      credentials: {
        accessKeyId: process.env.AWS_ACCESS_KEY_ID,
        secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
      },
      // As edcrm's boto3 client: checksums only where the API demands them (S3 servers other than AWS
      // refuse or lack the CRC32 the SDK adds to every request by default).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  })
  const tus = new Server({ path: '/files', datastore })
  const listener = http.createServer((req, res) => tus.handle(req, res))
  listener.listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'))
  process.on('SIGTERM', () => listener.close(() => process.exit(0)))
}

const [command, ...rest] = process.argv.slice(2)
const commands = { upload, server }
if (!commands[command]) {
  console.error('usage: tus_node.mjs upload ENDPOINT FILE CHUNK_BYTES | server PORT S3_ENDPOINT BUCKET PART_BYTES')
  process.exit(2)
}
await commands[command](rest)
