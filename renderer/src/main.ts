import { mount } from 'svelte';
import './app.css';
import App from './App.svelte';

const target = document.getElementById('app');
if (!target) throw new Error('renderer/index.html has no #app element');

export default mount(App, { target });
