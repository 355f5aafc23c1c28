const http = require('http');
const urls = process.argv.slice(1);
Promise.all(urls.map((u, i) => new Promise(done => {
  const r = http.get(u, { timeout: 10000 }, res => {
    let b = '';
    res.on('data', d => b += d);
    res.on('end', () => done(i + ' ' + b.replace(/\s+/g, ' ')));
  });
  r.on('timeout', () => r.destroy(new Error('timeout')));
  r.on('error', e => done(i + ' ERR ' + e.message));
}))).then(v => console.log(v.join('\n')));
