// Reveals the copy button and copies the key; without JavaScript the field can be copied by hand.
const button = document.getElementById('copy');
if (button && navigator.clipboard) {
  button.hidden = false;
  button.addEventListener('click', () => {
    const field = document.getElementById(button.dataset.copy);
    navigator.clipboard.writeText(field.value).then(() => { button.textContent = 'Copied'; });
  });
}
