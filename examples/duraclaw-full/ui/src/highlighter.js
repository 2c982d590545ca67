// highlight.js with the languages the UI colours: its own chunk, loaded
// when a first code block needs it (markdown.js falls back to plain text).
import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import diff from 'highlight.js/lib/languages/diff';
import go from 'highlight.js/lib/languages/go';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import typescript from 'highlight.js/lib/languages/typescript';
import ini from 'highlight.js/lib/languages/ini';
import yaml from 'highlight.js/lib/languages/yaml';

hljs.registerLanguage('bash', bash);
hljs.registerLanguage('diff', diff);
hljs.registerLanguage('go', go);
hljs.registerLanguage('javascript', javascript);
hljs.registerLanguage('json', json);
hljs.registerLanguage('python', python);
hljs.registerLanguage('rust', rust);
hljs.registerLanguage('typescript', typescript);
// highlight.js ships TOML as part of its `ini` grammar.
hljs.registerLanguage('ini', ini);
hljs.registerAliases(['toml'], { languageName: 'ini' });
hljs.registerLanguage('yaml', yaml);
hljs.registerAliases(['sh', 'shell', 'console', 'zsh'], { languageName: 'bash' });

export default hljs;
