// The test page's script (uppy.html): one Uppy with the Tus plugin, from the query string's settings.
// What happened ends up in #status ("uploading", "done" or "failed") and as JSON in #result and
// window.uppyResult: {"ok", "url", "error", "progress"}.
const params = new URLSearchParams(window.location.search)
const status = document.getElementById('status')
const result = document.getElementById('result')
const progress = document.getElementById('progress')
const button = document.getElementById('upload')

const uppy = new Uppy.Uppy({ autoProceed: false, allowMultipleUploadBatches: false })
uppy.use(Uppy.Tus, {
  endpoint: params.get('endpoint'),
  headers: { Authorization: `Bearer ${params.get('token')}` },
  chunkSize: params.get('chunk_size') ? Number(params.get('chunk_size')) : Infinity,
  parallelUploads: params.get('parallel') ? Number(params.get('parallel')) : 1,
  retryDelays: [0, 1000, 3000],
  // Only what edcrm's metadata knows (Uppy would send every field of file.meta).
  allowedMetaFields: ['call_log_id', 'filename', 'filetype', 'sha256'],
})

function report(outcome) {
  window.uppyResult = outcome
  result.textContent = JSON.stringify(outcome)
  status.textContent = outcome.ok ? 'done' : 'failed'
}

document.getElementById('file').addEventListener('change', (event) => {
  uppy.cancelAll()
  for (const file of event.target.files) {
    const meta = { call_log_id: params.get('call_log_id'), filename: file.name, filetype: file.type }
    if (params.get('sha256')) meta.sha256 = params.get('sha256')
    uppy.addFile({ name: file.name, type: file.type, data: file, meta })
  }
  button.disabled = false
})

button.addEventListener('click', () => {
  status.textContent = 'uploading'
  button.disabled = true
  uppy.upload()
})

uppy.on('progress', (percent) => {
  progress.value = percent
})
uppy.on('upload-error', (file, error) => {
  report({ ok: false, url: file?.tus?.uploadUrl ?? null, error: String(error?.message ?? error) })
})
uppy.on('complete', (outcome) => {
  if (outcome.failed.length > 0) {
    const failed = outcome.failed[0]
    report({ ok: false, url: failed.tus?.uploadUrl ?? null, error: String(failed.error) })
  } else if (outcome.successful.length > 0) {
    report({ ok: true, url: outcome.successful[0].uploadURL, error: null, progress: progress.value })
  }
})
