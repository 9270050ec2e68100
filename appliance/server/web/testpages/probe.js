// The probe page (probe.html): the call module and the block-code reader on window.appliance,
// for scripts to drive (see docs/call-js.md). A file, not an inline script: the CSP allows no inline code.
import * as call from './call.js';
import * as blockcode from './blockcode.js';
window.appliance = {...call, ...blockcode, video: document.getElementById('remote')};
window.dispatchEvent(new Event('appliance-ready'));
