#!/usr/bin/env node
// One upload by tus-js-client (Node), as the tests and benchmarks drive it; prints one JSON line.
//
//   node tests/clients/tus_upload.mjs --endpoint http://127.0.0.1:5000/api/recordings/tus/ --file call.wav \
//     [--token T] [--call-log-id 7] [--filename call.wav] [--filetype audio/wav] [--sha256 HEX]
//     [--chunk-size BYTES] [--parallel N] [--deferred] [--stream] [--checksum sha1|sha256|md5]
//     [--stop-after BYTES [--pause-ms MS]] [--terminate-after BYTES] [--no-retry] [--header 'Name: value']
//
// --stop-after cuts the connection in the middle of a PATCH (abort() once that many bytes went out), then
// a new Upload finds the stored URL (findPreviousUploads, or uploadUrl when the source has no
// fingerprint, as a stream has none) and resumes from the offset the server reports.
// --terminate-after aborts at that point and terminates the upload (DELETE).
// --stream reads the file as a plain stream (no size known up front; with --deferred, the length comes
// with the last PATCH, or in an empty PATCH when the file ends on a chunk boundary).
// --checksum sends Upload-Checksum on every PATCH, computed over the bytes of the file that PATCH carries
// (tus-js-client has no checksum option: this is done in onBeforeRequest; not with --parallel).
//
// Output: {"ok", "url", "bytes", "size", "resumed_from", "head_offsets", "terminated", "requests": [...],
// "timings": {...}}
// timings are milliseconds from the start: created (upload URL known), first_patch, last_response (the
// answer to the PATCH that carried the last byte), done; started_at is the epoch in milliseconds.
// On failure: {"ok": false, "error", "status", "body"} and exit status 1.

import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import * as tus from 'tus-js-client'

const { values: args } = parseArgs({
  options: {
    endpoint: { type: 'string' },
    file: { type: 'string' },
    token: { type: 'string' },
    'call-log-id': { type: 'string' },
    filename: { type: 'string' },
    filetype: { type: 'string' },
    sha256: { type: 'string' },
    metadata: { type: 'string', multiple: true }, // extra key=value pairs
    'chunk-size': { type: 'string' },
    parallel: { type: 'string' },
    deferred: { type: 'boolean', default: false },
    stream: { type: 'boolean', default: false },
    checksum: { type: 'string' },
    'stop-after': { type: 'string' },
    'pause-ms': { type: 'string', default: '300' },
    'terminate-after': { type: 'string' },
    'no-retry': { type: 'boolean', default: false },
    'upload-url': { type: 'string' }, // resume this upload instead of creating one
    header: { type: 'string', multiple: true },
  },
})

if (!args.endpoint || !args.file) {
  console.error('usage: tus_upload.mjs --endpoint URL --file PATH [options] (see the head of this file)')
  process.exit(2)
}

const t0 = performance.now()
const startedAt = Date.now()
const since = () => Math.round((performance.now() - t0) * 10) / 10
const size = fs.statSync(args.file).size
const chunkSize = args['chunk-size'] ? Number(args['chunk-size']) : args.stream ? 8 * 1024 * 1024 : Infinity
const parallel = args.parallel ? Number(args.parallel) : 1
const timings = {}
const requests = []

const headers = {}
if (args.token) headers.Authorization = `Bearer ${args.token}`
for (const line of args.header ?? []) {
  const at = line.indexOf(':')
  headers[line.slice(0, at).trim()] = line.slice(at + 1).trim()
}

const metadata = {}
if (args['call-log-id']) metadata.call_log_id = args['call-log-id']
metadata.filename = args.filename ?? path.basename(args.file)
if (args.filetype) metadata.filetype = args.filetype
if (args.sha256) metadata.sha256 = args.sha256
for (const pair of args.metadata ?? []) {
  const at = pair.indexOf('=')
  metadata[pair.slice(0, at)] = pair.slice(at + 1)
}

// --stream: the file as a source of unknown size, read one chunk at a time, that knows it has ended only
// when a read comes back short (a recorder's output, as it grows). tus-js-client's own StreamSource never
// resolves its last read when a stream ends exactly on a chunk boundary (tus-js-client 4.3.1: the
// process just exits), which is the case that matters most here: the length then comes in an empty
// PATCH (tusd's truncation bug, tus/tusd#396).
class GrowingFileSource {
  constructor(file) {
    this.fd = fs.openSync(file, 'r')
    this.size = null
  }
  async slice(start, end) {
    const want = end - start
    const value = Buffer.alloc(want)
    let got = 0
    while (got < want) {
      const bytesRead = await new Promise((resolve, reject) =>
        fs.read(this.fd, value, got, want - got, start + got, (err, n) => (err ? reject(err) : resolve(n))),
      )
      if (bytesRead === 0) break
      got += bytesRead
    }
    const chunk = value.subarray(0, got)
    chunk.size = got
    return { value: chunk, done: got < want }
  }
  close() {
    if (this.fd !== null) fs.closeSync(this.fd)
    this.fd = null
  }
}

const growingFileReader = {
  openFile: async (input) => new GrowingFileSource(input.growing),
}

// The Node source: a file stream (tus-js-client reads each slice from disk), or (--stream) a growing file.
function source() {
  return args.stream ? { growing: args.file } : fs.createReadStream(args.file)
}

// The "stored URL" between the cut Upload and the one that resumes it (the role of a phone's storage).
class MemoryUrlStorage {
  constructor() {
    this.uploads = new Map()
  }
  async findAllUploads() {
    return [...this.uploads.values()]
  }
  async findUploadsByFingerprint(fingerprint) {
    return [...this.uploads.values()].filter((upload) => upload.fingerprint === fingerprint)
  }
  async removeUpload(key) {
    this.uploads.delete(key)
  }
  async addUpload(fingerprint, upload) {
    const key = `tus::${fingerprint}::${crypto.randomUUID()}`
    this.uploads.set(key, { ...upload, fingerprint, urlStorageKey: key })
    return key
  }
}

// Upload-Checksum of the bytes a PATCH carries: [offset, offset + chunkSize) of the file.
function checksumOf(offset) {
  const length = Math.min(chunkSize, size - offset)
  const digest = crypto.createHash(args.checksum)
  if (length > 0) {
    const fd = fs.openSync(args.file, 'r')
    try {
      const block = Buffer.alloc(Math.min(length, 8 * 1024 * 1024))
      for (let done = 0; done < length; ) {
        const read = fs.readSync(fd, block, 0, Math.min(block.length, length - done), offset + done)
        if (read === 0) break
        digest.update(block.subarray(0, read))
        done += read
      }
    } finally {
      fs.closeSync(fd)
    }
  }
  return `${args.checksum} ${digest.digest('base64')}`
}

const urlStorage = new MemoryUrlStorage()

function options(extra = {}) {
  return {
    endpoint: args.endpoint,
    headers,
    metadata,
    chunkSize,
    parallelUploads: parallel,
    uploadLengthDeferred: args.deferred,
    uploadSize: args.stream && !args.deferred ? size : undefined,
    ...(args.stream ? { fileReader: growingFileReader, fingerprint: async () => null } : {}),
    // A 501 (an extension the server lacks) or a refusal will not change on a retry; a lock (423), an
    // offset conflict (409) or a server error may.
    onShouldRetry(err) {
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0
      return !(status === 501 || (status >= 400 && status < 500 && status !== 409 && status !== 423))
    },
    retryDelays: args['no-retry'] ? null : [0, 500, 1000, 2000, 3000, 5000],
    removeFingerprintOnSuccess: true,
    storeFingerprintForResuming: true,
    urlStorage,
    onBeforeRequest(req) {
      const method = req.getMethod()
      if (method === 'PATCH') {
        if (timings.first_patch === undefined) timings.first_patch = since()
        if (args.checksum) req.setHeader('Upload-Checksum', checksumOf(Number(req.getHeader('Upload-Offset'))))
      }
    },
    onAfterResponse(req, res) {
      const entry = { method: req.getMethod(), status: res.getStatus(), at: since() }
      const offset = res.getHeader('Upload-Offset')
      if (offset != null) entry.offset = Number(offset)
      requests.push(entry)
    },
    onUploadUrlAvailable() {
      if (timings.created === undefined) timings.created = since()
    },
    ...extra,
  }
}

function fail(error) {
  const response = error.originalResponse
  const out = { ok: false, error: String(error.message ?? error), requests, timings }
  if (response) {
    out.status = response.getStatus()
    out.body = response.getBody()
  }
  console.log(JSON.stringify(out))
  process.exit(1)
}

// Runs one Upload until it succeeds, fails, or is cut after `stopAfter` bytes; what happened.
function run(upload, stopAfter, terminate) {
  return new Promise((resolve, reject) => {
    upload.options.onProgress = (sent) => {
      if (stopAfter !== undefined && sent >= stopAfter && !upload._cut) {
        upload._cut = true
        // abort() during the PATCH: its request is destroyed, the connection cut mid-body.
        upload.abort(terminate).then(() => resolve({ cut: sent }), reject)
      }
    }
    upload.options.onSuccess = () => {
      timings.last_response = since()
      resolve({ done: true })
    }
    upload.options.onError = reject
    upload.start()
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function main() {
  const result = { ok: true, size, resumed_from: null, terminated: false, cut_at: null }
  const stopAfter = args['stop-after'] ? Number(args['stop-after']) : undefined
  const terminateAfter = args['terminate-after'] ? Number(args['terminate-after']) : undefined
  let upload = new tus.Upload(source(), options(args['upload-url'] ? { uploadUrl: args['upload-url'] } : {}))

  if (terminateAfter !== undefined) {
    const outcome = await run(upload, terminateAfter, true)
    Object.assign(result, { url: upload.url, terminated: true, cut_at: outcome.cut ?? null, bytes: outcome.cut })
  } else if (stopAfter !== undefined) {
    const outcome = await run(upload, stopAfter, false)
    result.cut_at = outcome.cut ?? null
    const firstUrl = upload.url
    await sleep(Number(args['pause-ms']))
    // A new Upload, as an app started again would make: the URL from the storage, the offset from HEAD.
    upload = new tus.Upload(source(), options())
    const previous = await upload.findPreviousUploads()
    if (previous.length > 0) {
      upload.resumeFromPreviousUpload(previous[0])
      result.resumed_with = 'findPreviousUploads'
    } else {
      upload.options.uploadUrl = firstUrl
      result.resumed_with = 'uploadUrl'
    }
    if (!outcome.done) await run(upload)
    // The offset the resume went on from: the last HEAD's (the first ones may come while the server
    // still holds the cut PATCH's lock and has not committed what it received).
    const heads = requests.filter((entry) => entry.method === 'HEAD')
    result.head_offsets = heads.map((entry) => entry.offset)
    result.resumed_from = heads.length > 0 ? heads[heads.length - 1].offset : null
    result.url = upload.url
    result.first_url = firstUrl
  } else {
    await run(upload)
    result.url = upload.url
  }
  if (!result.terminated) result.bytes = size
  timings.done = since()
  console.log(JSON.stringify({ ...result, requests, timings: { started_at: startedAt, ...timings } }))
}

main().catch(fail)
