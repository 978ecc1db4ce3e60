// Shows an upload's progress in the <progress> element a form names in data-upload-progress.
document.addEventListener("htmx:xhr:progress", (event) => {
  const form = event.target.closest("form[data-upload-progress]");
  if (!form || !event.detail.lengthComputable) return;
  const bar = document.getElementById(form.dataset.uploadProgress);
  bar.hidden = false;
  bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
});
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.target.closest && event.target.closest("form[data-upload-progress]");
  if (form) document.getElementById(form.dataset.uploadProgress).hidden = true;
});
